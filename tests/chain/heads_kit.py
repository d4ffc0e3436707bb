"""Helpers for tests of pushed heads (``nuclux.chain.heads``): counting a connection's
JSON-RPC requests, and a WebSocket endpoint of the test's own on loopback."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from aiohttp import web

from nuclux.chain import ChainConnection
from tests.node.local_nodes import free_port


def counting(conn: ChainConnection) -> list[str]:
    """The JSON-RPC methods ``conn`` sends from now on."""
    sent: list[str] = []
    real = conn._rpc

    async def rpc(method: str, params: list[Any]) -> Any:
        sent.append(method)
        return await real(method, params)

    conn._rpc = rpc  # type: ignore[method-assign]
    return sent


@contextlib.asynccontextmanager
async def serve(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """``handler`` answering on a free loopback port; yields its ``ws://`` address."""
    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port("127.0.0.1")
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield f"ws://127.0.0.1:{port}/"
    finally:
        await runner.cleanup()
