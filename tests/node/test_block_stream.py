"""Block streams (spec/node-api.md section 9) between a real node and ``NodeClient`` over TLS
on loopback: blocks in and out, refusals that keep the stream, malformed frames that end it,
abandoned reads, who may open one, and the node's shutdown."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest
from aiohttp import web

import nuclux.node.block_stream
from nuclux.core import block_frames as bf
from nuclux.core.merkle import root_of_bytes
from nuclux.core.reference import block_object_id
from nuclux.errors import (
    Forbidden,
    IntegrityError,
    ObjectNotFound,
    PeerIdentityMismatch,
    UsageError,
)
from nuclux.net.block_stream import BlockStream
from nuclux.net.client import NodeClient
from nuclux.net.tls import NodeIdentity
from tests.node.conftest import Served

FID = bytes(range(16))


def block(i: int, size: int = 100_000) -> tuple[bytes, bytes, bytes]:
    data = os.urandom(size)
    return block_object_id(FID, 0, i), data, root_of_bytes(data)


async def stream_of(c: NodeClient, lease: int) -> BlockStream:
    stream = await c._block_stream(lease)
    assert stream is not None
    return stream


async def test_blocks_go_in_and_out_on_one_stream(served: Served) -> None:
    async with served.client() as c:
        blocks = [block(i) for i in range(5)]
        stored = await asyncio.gather(*(c.put(served.lease, o, d, root=r) for o, d, r in blocks))
        assert [s.sha256 for s in stored] == [r for _, _, r in blocks]
        assert len(served.service._streams) == 1  # all five went on one stream
        for oid, data, _root in blocks:
            buf = bytearray(len(data) + 10)
            assert await c.get_into(served.lease, oid, buf, check_sha256=False) == len(data)
            assert bytes(buf[: len(data)]) == data
            assert await c.get(served.lease, oid) == data  # the HTTP API sees the same
        stream = await stream_of(c, served.lease)
        n, digest = await stream.get_into(blocks[0][0], memoryview(bytearray(100_000)))
        assert (n, digest) == (100_000, blocks[0][2])
        assert len(served.service._streams) == 1


async def test_refusals_answer_and_keep_the_stream(served: Served) -> None:
    async with served.client() as c:
        oid, data, root = block(0)
        with pytest.raises(IntegrityError):  # the body does not hash to the root sent
            await c.put(served.lease, oid, data, root=hashlib.sha256(data).digest())
        with pytest.raises(ObjectNotFound):
            await c.get(served.lease, oid)  # nothing was stored
        stream = await stream_of(c, served.lease)
        with pytest.raises(UsageError, match="share blocks only"):
            await stream.put(b"plain object", data, root)
        with pytest.raises(ObjectNotFound):
            await stream.get_into(oid, memoryview(bytearray(len(data))))
        too_small = memoryview(bytearray(10))
        await c.put(served.lease, oid, data, root=root)
        with pytest.raises(UsageError, match="more than the buffer"):
            await stream.get_into(oid, too_small)
        assert bytes(too_small) == bytes(10)  # nothing past the buffer, nothing at all
        assert stream.is_open
        assert await stream_of(c, served.lease) is stream
        buf = bytearray(len(data))
        await stream.get_into(oid, memoryview(buf))
        assert buf == data


async def test_a_malformed_header_ends_the_stream(served: Served) -> None:
    async with served.client() as c:
        oid, data, root = block(0)
        await c.put(served.lease, oid, data, root=root)
        stream = await stream_of(c, served.lease)
        bad = bytearray(bf.get_header(oid))
        bad[0] = 9  # no such op
        with pytest.raises(UsageError, match="unknown block stream op"):
            await stream._ask(bf.GET, bytes(bad), None, None, 5.0)
        for _ in range(100):
            if not served.service._streams:
                break
            await asyncio.sleep(0.02)
        assert not served.service._streams  # the node closed it
        buf = bytearray(len(data))  # the next request opens a new stream
        assert await c.get_into(served.lease, oid, buf, check_sha256=False) == len(data)
        assert buf == data
        assert await stream_of(c, served.lease) is not stream


async def test_an_abandoned_read_never_touches_its_buffer(served: Served) -> None:
    async with served.client() as c:
        big = [block(i, 4 << 20) for i in range(3)]
        for oid, data, root in big:
            await c.put(served.lease, oid, data, root=root)
        stream = await stream_of(c, served.lease)
        buffers = [bytearray(4 << 20) for _ in big]
        reads = [
            asyncio.ensure_future(stream.get_into(oid, memoryview(buf)))
            for (oid, _, _), buf in zip(big, buffers, strict=True)
        ]
        await asyncio.sleep(0)
        reads[1].cancel()
        assert (await reads[2])[0] == 4 << 20
        assert (await reads[0])[0] == 4 << 20
        assert reads[1].cancelled()
        assert buffers[0] == big[0][1]
        assert buffers[2] == big[2][1]
        assert buffers[1] == bytes(4 << 20)  # the cancelled read's answer went elsewhere


async def test_only_the_consumer_opens_a_stream(served: Served) -> None:
    async with served.client(1) as stranger:
        with pytest.raises(Forbidden):
            await stranger._block_stream(served.lease)
        oid, data, root = block(0)
        with pytest.raises(Forbidden):
            await stranger.put(served.lease, oid, data, root=root)
    assert not served.service._streams


async def test_clients_without_streams_use_http(served: Served) -> None:
    key = bytes(served.world.consumers[0].account.key)
    async with NodeClient(served.url, served.identity.fingerprint, key, block_streams=False) as c:
        oid, data, root = block(0)
        await c.put(served.lease, oid, data, root=root)
        buf = bytearray(len(data))
        await c.get_into(served.lease, oid, buf, check_sha256=False)
        assert buf == data
    assert not served.service._streams


async def test_shutdown_ends_open_streams(served: Served) -> None:
    async with served.client() as c:
        oid, data, root = block(0)
        await c.put(served.lease, oid, data, root=root)
        (node_end,) = served.service._streams
        assert await served.service.finish_requests(5.0)
        assert node_end.closed.done()
        stream = c._streams[served.lease]
        for _ in range(100):
            if not stream.is_open:
                break
            await asyncio.sleep(0.02)
        assert not stream.is_open


async def test_a_node_without_streams_gets_http_requests(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def old_node(*args: object) -> web.StreamResponse:
        raise web.HTTPNotFound()  # what a node without the route answers

    monkeypatch.setattr(nuclux.node.block_stream, "serve", old_node)
    async with served.client() as c:
        oid, data, root = block(0)
        await c.put(served.lease, oid, data, root=root)
        assert c._streams_offered is False
        buf = bytearray(len(data))
        await c.get_into(served.lease, oid, buf, check_sha256=False)
        assert buf == data
    assert not served.service._streams


async def test_an_unknown_lease_is_not_taken_for_a_node_without_streams(served: Served) -> None:
    async with served.client() as c:
        oid, data, root = block(0)
        with pytest.raises(ObjectNotFound, match="does not know lease"):
            await c.put(served.lease + 1000, oid, data, root=root)
        assert c._streams_offered is True  # a later lease still gets a stream
        await c.put(served.lease, oid, data, root=root)
        assert len(served.service._streams) == 1


async def test_a_stream_to_a_server_with_another_certificate_is_refused(served: Served) -> None:
    impostor = NodeIdentity.generate(served.world.providers[1].address)
    async with served.client(fingerprint=impostor.fingerprint) as c:
        oid, data, root = block(0)
        with pytest.raises(PeerIdentityMismatch):
            await c.put(served.lease, oid, data, root=root)
    assert not served.service._streams
