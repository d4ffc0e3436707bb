"""A bare TLS sink/source in its own process, for the ceiling of ``bench.storage``.

    .venv/bin/python -m bench._tls_sink

It serves ``bench._node_fixture``'s bare protocol (``w`` + n: read and discard n bytes, answer
``k``; ``r`` + n: send n bytes; ``q``: goodbye) over TLS 1.3 with a fresh ``NodeIdentity`` and
the node's ``server_ssl_context``, on the standard asyncio loop as a node runs. It prints one
JSON line (``{"port": ..., "fingerprint": ...}``) and serves until its stdin closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass

from eth_account import Account

from bench._node_fixture import CHUNK, _raw_handler
from nuclux.net.tls import NodeIdentity, server_ssl_context


@dataclass(frozen=True)
class Sink:
    port: int
    fingerprint: bytes
    pid: int


async def _serve() -> None:
    identity = NodeIdentity.generate(Account.from_key(os.urandom(32)).address)
    server = await asyncio.start_server(
        _raw_handler, "127.0.0.1", 0, ssl=server_ssl_context(identity), limit=CHUNK
    )
    port = server.sockets[0].getsockname()[1]
    print(json.dumps({"port": port, "fingerprint": identity.fingerprint.hex()}), flush=True)
    try:
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.buffer.read)
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def sink_processes(count: int) -> AsyncIterator[list[Sink]]:
    """``count`` sink processes; each is stopped (stdin closed, then killed by PID) on exit."""
    children: list[asyncio.subprocess.Process] = []
    try:
        for _ in range(count):
            children.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench._tls_sink",
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
            )
        sinks = []
        for child in children:
            assert child.stdout is not None
            line = await asyncio.wait_for(child.stdout.readline(), 120)
            if not line:
                raise RuntimeError("a TLS sink exited before serving")
            info = json.loads(line)
            sinks.append(Sink(int(info["port"]), bytes.fromhex(info["fingerprint"]), child.pid))
        yield sinks
    finally:
        for child in children:
            if child.stdin is not None:
                child.stdin.close()
        for child in children:
            try:
                await asyncio.wait_for(child.wait(), 10)
            except TimeoutError:
                child.kill()
                await child.wait()


if __name__ == "__main__":
    asyncio.run(_serve())
