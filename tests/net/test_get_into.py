"""``NodeClient.get_into``: a body arriving in many chunks lands in the caller's buffer, is
checked against the digest the node reports (or not, when the caller checks it), never
overruns the buffer, and a stalled body is bounded by ``timeout``."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from nuclux.core.merkle import root_of_bytes
from nuclux.errors import IntegrityError
from nuclux.net.client import BufferTooSmall, NodeClient
from nuclux.net.signing import CONTENT_ROOT_HEADER, CONTENT_SHA256_HEADER
from nuclux.net.tls import NodeIdentity, server_ssl_context

BODY = os.urandom(3 * (1 << 20) + 12_345)
KEY = hashlib.sha256(b"nuclux-test/get-into").digest()
OID = b"\x01\x02"
PIECE = 64 << 10


@pytest.fixture(scope="module")
def node() -> NodeIdentity:
    return NodeIdentity.generate("0x" + "cd" * 20)


@asynccontextmanager
async def serve(
    node: NodeIdentity, headers: dict[str, str], *, sized: bool = True, stall: bool = False
) -> AsyncIterator[NodeClient]:
    """A node stand-in serving ``BODY`` in 64 KiB writes (``sized``: with a Content-Length,
    else chunked; ``stall``: stops half way and never finishes)."""

    async def get(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers=headers)
        if sized:
            resp.content_length = len(BODY)
        await resp.prepare(request)
        for i in range(0, len(BODY), PIECE):
            if stall and i >= len(BODY) // 2:
                await release.wait()  # the end of the test
                return resp
            await resp.write(BODY[i : i + PIECE])
        await resp.write_eof()
        return resp

    release = asyncio.Event()
    app = web.Application()
    app.router.add_get("/v1/{tail:.*}", get)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context(node))
        await site.start()
        port = runner.addresses[0][1]
        async with NodeClient(f"https://127.0.0.1:{port}", node.fingerprint, KEY) as client:
            yield client
    finally:
        release.set()
        await runner.cleanup()


SHA = {CONTENT_SHA256_HEADER: hashlib.sha256(BODY).hexdigest()}
ROOT = {CONTENT_ROOT_HEADER: root_of_bytes(BODY).hex()}


@pytest.mark.parametrize("digest", [SHA, ROOT], ids=["sha256", "merkle-root"])
async def test_a_body_in_many_chunks_lands_in_the_buffer_checked(
    node: NodeIdentity, digest: dict[str, str]
) -> None:
    buffer = bytearray(len(BODY) + 100)
    async with serve(node, digest) as client:
        assert await client.get_into(7, OID, buffer, timeout=30) == len(BODY)
    assert buffer[: len(BODY)] == BODY
    assert buffer[len(BODY) :] == bytes(100)


async def test_a_wrong_digest_is_refused_unless_the_caller_checks_itself(
    node: NodeIdentity,
) -> None:
    wrong = {CONTENT_SHA256_HEADER: hashlib.sha256(b"other").hexdigest()}
    buffer = bytearray(len(BODY))
    async with serve(node, wrong) as client:
        with pytest.raises(IntegrityError, match="does not match the hash"):
            await client.get_into(7, OID, buffer)
        assert await client.get_into(7, OID, buffer, check_sha256=False) == len(BODY)
    assert buffer == BODY


@pytest.mark.parametrize("sized", [True, False], ids=["content-length", "chunked"])
async def test_a_body_longer_than_the_buffer_never_overruns_it(
    node: NodeIdentity, sized: bool
) -> None:
    backing = bytearray(b"\xee" * (len(BODY) + 4096))
    view = memoryview(backing)[: len(BODY) - 1]
    async with serve(node, SHA, sized=sized) as client:
        with pytest.raises(BufferTooSmall, match="too small"):
            await client.get_into(7, OID, view, check_sha256=False)
    assert backing[len(BODY) - 1 :] == b"\xee" * 4097  # nothing beyond the view


async def test_a_stalled_body_is_bounded_by_the_timeout(node: NodeIdentity) -> None:
    buffer = bytearray(len(BODY))
    async with serve(node, SHA, stall=True) as client:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(TimeoutError):
            await client.get_into(7, OID, buffer, check_sha256=False, timeout=0.5)
        assert loop.time() - started < 5
