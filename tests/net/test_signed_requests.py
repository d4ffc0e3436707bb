"""Signed requests end to end: an aiohttp server over TLS 1.3 on 127.0.0.1 checks them."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from nuclux.core.auth import ReplayGuard, RequestVerifier, signer_of, to_address
from nuclux.errors import AuthError, IntegrityError, Unauthenticated
from nuclux.net.signing import authenticate, check_body, signed_headers
from nuclux.net.tls import NodeIdentity, client_ssl_context, server_ssl_context

KEY = hashlib.sha256(b"nuclux-test/alice").digest()
ADDRESS = to_address(signer_of(KEY))
TIMEOUT = 10
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture(scope="module")
def node() -> NodeIdentity:
    return NodeIdentity.generate("0x" + "ab" * 20)


@asynccontextmanager
async def serve(node: NodeIdentity) -> AsyncIterator[URL]:
    verifier = RequestVerifier(node.fingerprint, ReplayGuard(120, 1000))

    @web.middleware
    async def errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except Unauthenticated as err:
            return web.Response(status=401, text=f"{type(err).__name__}: {err}")
        except AuthError as err:
            return web.Response(status=403, text=str(err))
        except IntegrityError as err:
            return web.Response(status=422, text=str(err))

    async def put(request: web.Request) -> web.Response:
        who = authenticate(request, verifier)
        check_body(who.content_sha256, hashlib.sha256(await request.read()).digest())
        return web.Response(text=who.address)

    app = web.Application(middlewares=[errors])
    app.router.add_route("*", "/v1/{tail:.*}", put)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context(node))
        await site.start()
        yield URL(f"https://127.0.0.1:{runner.addresses[0][1]}")
    finally:
        await runner.cleanup()


@asynccontextmanager
async def client(node: NodeIdentity) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(ssl=client_ssl_context(node.fingerprint))
    async with aiohttp.ClientSession(connector=connector) as session:
        yield session


async def test_signed_put_and_refusals(node: NodeIdentity) -> None:
    body = b"share bytes" * 1000
    digest = hashlib.sha256(body).digest()
    async with serve(node) as base, client(node) as session, asyncio.timeout(TIMEOUT):
        url = base / "v1/leases/7/objects/00ff" % {"x": "a b/c"}
        headers = signed_headers(
            KEY, "PUT", url, fingerprint=node.fingerprint, content_sha256=digest
        )

        async def put(target: URL, hdrs: dict[str, str], data: bytes = body) -> tuple[int, str]:
            async with session.put(target, headers=hdrs, data=data) as resp:
                return resp.status, await resp.text()

        status, text = await put(url, headers)
        assert (status, text) == (200, ADDRESS)
        assert (await put(url, headers))[1].startswith("ReplayedRequest")
        fresh = signed_headers(KEY, "PUT", url, fingerprint=node.fingerprint, content_sha256=digest)
        assert (await put(url, fresh, b"other body"))[0] == 422
        other_server = signed_headers(KEY, "PUT", url, fingerprint=bytes(32), content_sha256=digest)
        assert (await put(url, other_server))[0] == 401
        moved = signed_headers(KEY, "PUT", url, fingerprint=node.fingerprint, content_sha256=digest)
        assert (await put(base / "v1/leases/8/objects/00ff", moved))[0] == 401
        assert (await put(url, {}))[1].startswith("Unauthenticated: missing Authorization")
        stale = signed_headers(
            KEY, "PUT", url, fingerprint=node.fingerprint, content_sha256=digest, now=1
        )
        assert (await put(url, stale))[1].startswith("StaleRequest")
        junk = {"Authorization": "Nuclux v1 " + "A" * 400}
        assert (await put(url, junk))[0] == 401
