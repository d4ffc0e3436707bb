"""``POST /v1/leases/{lease}/objects``: many small objects in one request, on a real node."""

from __future__ import annotations

import hashlib
import os

import aiohttp
import pytest
from yarl import URL

from nuclux.core.batch import encode_batch
from nuclux.errors import Forbidden, ObjectNotFound, QuotaExceeded, UsageError
from nuclux.net.signing import signed_headers
from nuclux.net.tls import client_ssl_context
from nuclux.sdk.nodeapi import block_object_id
from tests.node.conftest import Served


async def test_a_batch_stores_every_object(served: Served) -> None:
    s = served
    items = [(f"m/{i}".encode(), os.urandom(100 + i)) for i in range(40)]
    async with s.client() as c:
        stored = await c.put_batch(s.lease, items)
        assert [x.object_id for x in stored] == [oid for oid, _ in items]
        for oid, data in items:
            assert await c.get(s.lease, oid) == data
        assert (await c.usage(s.lease))["used_bytes"] == sum(len(d) for _, d in items)
        again = await c.put_batch(s.lease, items[:3])  # idempotent
        assert [x.sha256 for x in again] == [hashlib.sha256(d).digest() for _, d in items[:3]]


async def test_a_batch_with_a_share_block_changes_nothing(served: Served) -> None:
    s = served
    block = block_object_id(bytes(16), 0, 0)
    async with s.client() as c:
        with pytest.raises(UsageError, match="share block"):
            await c.put_batch(s.lease, [(b"fine", b"1"), (block, b"2")])
        with pytest.raises(ObjectNotFound):
            await c.get(s.lease, b"fine")
    async with s.client(1) as stranger:
        with pytest.raises(Forbidden):
            await stranger.put_batch(s.lease, [(b"x", b"1")])


async def test_malformed_or_mismatched_bodies_change_nothing(served: Served) -> None:
    s = served
    url = f"{s.url}/v1/leases/{s.lease}/objects"
    key = bytes(s.world.consumers[0].account.key)
    connector = aiohttp.TCPConnector(ssl=client_ssl_context(s.identity.fingerprint))

    def headers(body: bytes, signed: bytes | None = None) -> dict[str, str]:
        sha = hashlib.sha256(body if signed is None else signed).digest()
        return signed_headers(
            key, "POST", URL(url), fingerprint=s.identity.fingerprint, content_sha256=sha
        )

    good = encode_batch([(b"a", b"alpha")])
    async with aiohttp.ClientSession(connector=connector) as raw:
        bad = good + b"trailing"
        async with raw.post(url, data=bad, headers=headers(bad)) as resp:
            assert resp.status == 400
            assert "follow the last record" in (await resp.json())["error"]["message"]
        async with raw.post(url, data=good, headers=headers(good, b"other")) as resp:
            assert resp.status == 422
        async with raw.post(url, data=good, headers=headers(b"")) as resp:
            assert resp.status == 422
    async with s.client() as c:
        with pytest.raises(ObjectNotFound):
            await c.get(s.lease, b"a")


async def test_a_batch_that_does_not_fit_is_refused(served: Served) -> None:
    s = served
    s.service.unit_bytes = 100_000  # the lease's one unit now reserves 100 kB
    async with s.client() as c:
        items = [(f"o{i}".encode(), os.urandom(60_000)) for i in range(2)]
        with pytest.raises(QuotaExceeded):
            await c.put_batch(s.lease, items)
        assert (await c.usage(s.lease))["used_bytes"] == 0  # a batch is stored whole or not
        with pytest.raises(ObjectNotFound):
            await c.get(s.lease, b"o0")


async def test_the_client_checks_the_nodes_account(served: Served) -> None:
    s = served
    async with s.client() as c:
        with pytest.raises(UsageError, match="twice"):
            await c.put_batch(s.lease, [(b"a", b"1"), (b"a", b"1")])
        stored = await c.put_batch(s.lease, [(b"b", b"beta")])
        assert stored[0].size == 4
