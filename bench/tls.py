"""Loopback TLS 1.3 throughput of one asyncio stream: the ceiling for the data path.

    .venv/bin/python -m bench.tls [--seconds 2] [--runs 3]

A receiver in a child process (standing for the node) serves ``nuclux.net.tls``'s server
context on 127.0.0.1 and discards what it reads; this process sends 1 MiB writes over one
stream with the pinned client context. Each run sends an 8-byte length, then the bytes, and
stops the clock when the receiver acknowledges the last one. Prints the median run::

    tls_ceiling_MBps=...      (MB = 10**6 bytes)

and, for small requests, the cost of one aiohttp HTTPS request and response
(``https_request_us``, client and server on one loop, see ``measure_request_us``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from nuclux.net.tls import NodeIdentity, client_ssl_context, server_ssl_context

CHUNK = 1 << 20
ADDRESS = "0x" + "ab" * 20


async def _sink(directory: Path) -> None:
    identity = NodeIdentity.load(directory / "node.crt", directory / "node.key")
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while left := int.from_bytes(await reader.readexactly(8), "big"):
                while left:
                    data = await reader.read(min(left, CHUNK))
                    if not data:
                        return
                    left -= len(data)
                writer.write(b"k")
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()
            done.set()

    server = await asyncio.start_server(
        handle, "127.0.0.1", 0, ssl=server_ssl_context(identity), limit=CHUNK
    )
    async with server:
        print(server.sockets[0].getsockname()[1], flush=True)
        await done.wait()


async def _run_once(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, total: int
) -> float:
    buf = bytes(CHUNK)
    start = time.perf_counter()
    writer.write(total.to_bytes(8, "big"))
    for _ in range(total // CHUNK):
        writer.write(buf)
        await writer.drain()
    await reader.readexactly(1)
    return total / (time.perf_counter() - start) / 1e6


async def measure_ceiling(seconds: float = 2.0, runs: int = 3) -> float:
    """Median MB/s of ``runs`` transfers of about ``seconds`` each."""
    with tempfile.TemporaryDirectory(prefix="nuclux-bench-") as tmp:
        identity = NodeIdentity.generate(ADDRESS)
        identity.save(Path(tmp, "node.crt"), Path(tmp, "node.key"))
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.tls", "--sink", tmp, stdout=asyncio.subprocess.PIPE
        )
        try:
            assert child.stdout is not None
            port = int(await asyncio.wait_for(child.stdout.readline(), 30))
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client_ssl_context(identity.fingerprint)
            )
            warm = await _run_once(reader, writer, 128 * CHUNK)
            total = max(CHUNK, int(warm * 1e6 * seconds) // CHUNK * CHUNK)
            figures = [await _run_once(reader, writer, total) for _ in range(runs)]
            writer.write((0).to_bytes(8, "big"))
            await writer.drain()
            writer.close()
            await asyncio.wait_for(child.wait(), 30)
            return statistics.median(figures)
        finally:
            if child.returncode is None:
                child.kill()
                await child.wait()


async def measure_request_us(seconds: float = 2.0) -> float:
    """Microseconds per small HTTPS request (aiohttp, keep-alive, one connection), client
    and server on this one event loop: the sum of both sides' costs, an upper bound on the
    server's own per-request cost."""
    identity = NodeIdentity.generate(ADDRESS)

    async def empty(request: web.Request) -> web.Response:
        return web.Response(body=b"")

    app = web.Application()
    app.router.add_get("/x", empty)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context(identity))
        await site.start()
        url = f"https://127.0.0.1:{runner.addresses[0][1]}/x"
        connector = aiohttp.TCPConnector(ssl=client_ssl_context(identity.fingerprint), limit=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            count, start = 0, time.perf_counter()
            while (elapsed := time.perf_counter() - start) < seconds:
                async with session.get(url) as resp:
                    await resp.read()
                count += 1
        return elapsed / count * 1e6
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sink", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink is not None:
        asyncio.run(_sink(args.sink))
        return
    print(f"tls_ceiling_MBps={asyncio.run(measure_ceiling(args.seconds, args.runs)):.0f}")
    print(f"https_request_us={asyncio.run(measure_request_us(args.seconds)):.0f}")


if __name__ == "__main__":
    main()
