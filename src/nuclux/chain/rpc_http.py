"""JSON-RPC over HTTP with keep-alive connections and no thread hand-off per request.

web3's ``AsyncHTTPProvider`` posts every request through a session manager that (in the
pinned web3 7) opens its sessions with ``force_close=True`` (a new TCP connection per
request) and takes a ``threading.Lock`` through a thread pool on every call. A node polls
its chain several times a second from three agents, so that was most of an idle node's CPU:
in a profile of an idle node on a devnet, the lock's thread hand-off and the connects were
over half of it.

``KeepAliveHTTPProvider`` is that provider with its session handling replaced: one
``aiohttp`` session per event loop, a pool of keep-alive connections (``POOL`` at most),
created on first use and closed by ``disconnect``. A call after ``disconnect`` still works,
on a session and connection of its own closed after it (nothing is left open for a loop
about to end). Requests, batching, retries and error handling are web3's own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import ClientSession, ClientTimeout, TCPConnector
from web3 import AsyncHTTPProvider

POOL = 16


class _Sessions:
    """Stands in for web3's session manager: the one method the provider posts through."""

    def __init__(self) -> None:
        self._by_loop: dict[int, tuple[asyncio.AbstractEventLoop, ClientSession]] = {}
        self._closed = False

    def session(self) -> ClientSession:
        loop = asyncio.get_running_loop()
        known = self._by_loop.get(id(loop))
        if known is None or known[0] is not loop or known[1].closed:
            known = (loop, ClientSession(connector=TCPConnector(limit=POOL)))
            self._by_loop[id(loop)] = known
        return known[1]

    async def async_make_post_request(self, endpoint_uri: str, data: Any, **kwargs: Any) -> bytes:
        if self._closed:  # a late call (a background task finishing): nothing left open after
            async with ClientSession(connector=TCPConnector(force_close=True)) as once:
                return await _post(once, endpoint_uri, data, kwargs)
        return await _post(self.session(), endpoint_uri, data, kwargs)

    async def close(self) -> None:
        """Close the sessions of this loop (and forget those of loops that are closed)."""
        self._closed = True
        loop = asyncio.get_running_loop()
        mine = [s for owner, s in self._by_loop.values() if owner is loop]
        self._by_loop = {k: v for k, v in self._by_loop.items() if not v[0].is_closed()}
        self._by_loop.pop(id(loop), None)
        for session in mine:
            if not session.closed:
                await session.close()


async def _post(session: ClientSession, url: str, data: Any, kwargs: dict[str, Any]) -> bytes:
    async with session.post(url, data=data, **kwargs) as response:
        response.raise_for_status()
        return await response.read()


class KeepAliveHTTPProvider(AsyncHTTPProvider):
    def __init__(self, url: str, *, timeout: float = 30.0) -> None:
        super().__init__(url, request_kwargs={"timeout": ClientTimeout(total=timeout)})
        self._sessions = _Sessions()
        self._request_session_manager = self._sessions  # type: ignore[assignment]

    async def disconnect(self) -> None:
        await self._sessions.close()
