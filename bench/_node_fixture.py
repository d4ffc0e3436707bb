"""One node for ``bench.node_io``: the embedded chain, a storage lease, a shard store and the
aiohttp API over TLS 1.3, plus a bare TLS sink/source on the same loop and certificate.

    .venv/bin/python -m bench._node_fixture [--dir DIR]

Run as a child process, it prints one JSON line (``NodeEndpoints``) and serves until its stdin
closes. ``serve_node()`` does the same inside the caller's event loop.

The bare server is the ceiling's other end: the same event loop type, ``server_ssl_context``
and certificate as the node, with no application work. A connection sends requests of nine
bytes, an op and a big-endian length: ``w`` + n: the server reads and discards n bytes, then
answers ``k``; ``r`` + n: the server sends n bytes in 1 MiB writes; ``q``: goodbye.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import json
import os
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

from aiohttp import web
from tests.chain.world import PRICES, build_world

from nuclux import aio
from nuclux.allocator import tune_allocator
from nuclux.chain import ChainConnection
from nuclux.core.auth import ReplayGuard, RequestVerifier
from nuclux.core.types import ONE_NUX, ResourceClass
from nuclux.net.tls import NodeIdentity, server_ssl_context
from nuclux.node.follower import ChainView
from nuclux.node.server import NodeService
from nuclux.node.store import ShardStore

CHUNK = 1 << 20
T = TypeVar("T")
UNIT_BYTES = 1 << 40  # the lease's one unit reserves 1 TiB: the quota never binds
CAPACITY = 1 << 42


@dataclass(frozen=True)
class NodeEndpoints:
    url: str  # the node's API, https://127.0.0.1:PORT
    raw_port: int  # the bare TLS sink/source
    fingerprint: str  # hex of the certificate pin
    lease: int
    consumer_key: str  # hex of consumer 0's Ethereum key (a test key)


async def _raw_handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    source = memoryview(os.urandom(CHUNK))
    try:
        while True:
            head = await reader.readexactly(9)
            op, n = head[:1], int.from_bytes(head[1:], "big")
            if op == b"w":
                while n:
                    data = await reader.read(min(n, CHUNK))
                    if not data:
                        return
                    n -= len(data)
                writer.write(b"k")
            elif op == b"r":
                while n:
                    k = min(n, CHUNK)
                    writer.write(source[:k])
                    await writer.drain()
                    n -= k
            else:
                return
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def serve_node(root: Path) -> AsyncIterator[NodeEndpoints]:
    """The whole node (chain world, lease, view, store, API) and the bare TLS server."""
    conn = await ChainConnection.open("embedded")
    try:
        w = await build_world(conn, n_providers=1, n_consumers=1, register=1)
        provider, consumer = w.providers[0], w.consumers[0]
        lid = await consumer.open_lease(
            provider.address, ResourceClass.STORAGE, 1, 10, PRICES[0], ONE_NUX
        )
        await w.operators[0].accept(lid)
        view = ChainView(w.deployer)
        try:
            await view.catch_up()
            identity = NodeIdentity.generate(provider.address)
            ssl_ctx = server_ssl_context(identity)
            store = await ShardStore.open(root / "store", CAPACITY, grace_seconds=60)
            try:
                service = NodeService(
                    owner=provider.address,
                    operator=w.operators[0].address,
                    fingerprint=identity.fingerprint,
                    chain_id=conn.chain_id,
                    store=store,
                    view=view,
                    verifier=RequestVerifier(identity.fingerprint, ReplayGuard(120)),
                    unit_bytes=UNIT_BYTES,
                )
                runner = service.runner()
                await runner.setup()
                raw = await asyncio.start_server(
                    _raw_handler, "127.0.0.1", 0, ssl=ssl_ctx, limit=CHUNK
                )
                try:
                    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_ctx)
                    await site.start()
                    yield NodeEndpoints(
                        url=f"https://127.0.0.1:{runner.addresses[0][1]}",
                        raw_port=raw.sockets[0].getsockname()[1],
                        fingerprint=identity.fingerprint.hex(),
                        lease=lid,
                        consumer_key=bytes(consumer.account.key).hex(),
                    )
                finally:
                    raw.close()
                    await raw.wait_closed()
                    await runner.cleanup()
            finally:
                await store.close()
        finally:
            view.close()
    finally:
        await conn.close()


async def _child(directory: str | None, profile: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="nuclux-bench-node-", dir=directory) as tmp:
        async with serve_node(Path(tmp)) as ends:
            profiler = None if profile is None else cProfile.Profile()
            if profiler is not None:
                profiler.enable()
            print(json.dumps(asdict(ends)), flush=True)
            # serve until the parent closes our stdin (or dies)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)
            if profiler is not None and profile is not None:
                profiler.disable()
                profiler.dump_stats(profile)


@contextlib.asynccontextmanager
async def node_process(
    directory: str | None = None, *, profile: str | None = None, loop: str = "asyncio"
) -> AsyncIterator[NodeEndpoints]:
    """``serve_node`` in a child process (the node's own core, as in production);
    ``profile``: where the child writes cProfile data of its serving."""
    args = [sys.executable, "-m", "bench._node_fixture"]
    if directory is not None:
        args += ["--dir", directory]
    if profile is not None:
        args += ["--profile", profile]
    args += ["--loop", loop]
    child = await asyncio.create_subprocess_exec(
        *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert child.stdout is not None
        assert child.stdin is not None
        line = await asyncio.wait_for(child.stdout.readline(), 120)
        if not line:
            raise RuntimeError("the node process exited before serving")
        yield NodeEndpoints(**json.loads(line))
    finally:
        # closing stdin asks the child to stop and remove its temp directory, also when the
        # caller failed; a kill (it would leave the directory behind) only if it does not
        if child.stdin is not None and not child.stdin.is_closing():
            child.stdin.close()
        try:
            await asyncio.wait_for(child.wait(), 60)
        except TimeoutError:
            child.kill()
            await child.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="parent of the store's temp directory")
    parser.add_argument("--profile", default=None, help="write cProfile data of serving here")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    tune_allocator()  # as `nuclux node run` does
    aio.run(_child(args.dir, args.profile), args.loop)


if __name__ == "__main__":
    main()
