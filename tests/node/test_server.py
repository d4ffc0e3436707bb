"""The node API end to end on loopback: a real TLS 1.3 server, the embedded chain, the
follower's view and the shard store; every refusal the spec promises."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator

import aiohttp
import pytest
from yarl import URL

from nuclux.core.capability import capability_to_header, issue_capability
from nuclux.core.units import GIB
from nuclux.errors import (
    Forbidden,
    ObjectNotFound,
    PeerIdentityMismatch,
    QuotaExceeded,
    Unauthenticated,
)
from nuclux.net.client import NodeRequestError
from nuclux.net.signing import signed_headers
from nuclux.net.tls import NodeIdentity, client_ssl_context
from tests.node.conftest import Served


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


async def test_consumer_writes_reads_lists_and_deletes(served: Served) -> None:
    s = served
    data = os.urandom(3 << 20)
    async with s.client() as c:
        info = await c.info()
        assert info["provider"] == s.world.providers[0].address
        stored = await c.put(s.lease, b"obj-1", data)
        assert stored.sha256 == hashlib.sha256(data).digest()
        assert await c.get(s.lease, b"obj-1") == data
        assert await c.get(s.lease, b"obj-1", offset=1000, length=5000) == data[1000:6000]
        assert await c.get(s.lease, b"obj-1", offset=len(data) - 10) == data[-10:]
        await c.put(s.lease, b"obj-2", b"small")
        assert [o.object_id for o in await c.list(s.lease)] == [b"obj-1", b"obj-2"]
        usage = await c.usage(s.lease)
        assert usage["used_bytes"] == len(data) + 5
        await c.delete(s.lease, b"obj-1")
        with pytest.raises(ObjectNotFound):
            await c.get(s.lease, b"obj-1")


async def test_strangers_and_unsigned_requests_are_refused(served: Served) -> None:
    s = served
    async with s.client() as c:
        await c.put(s.lease, b"mine", b"secret")
    async with s.client(1) as stranger:
        with pytest.raises(Forbidden, match="not the consumer"):
            await stranger.get(s.lease, b"mine")
        with pytest.raises(Forbidden):
            await stranger.put(s.lease, b"mine", b"overwrite")
        with pytest.raises(ObjectNotFound, match="does not know lease"):
            await stranger.get(9999, b"x")
    url = f"{s.url}/v1/leases/{s.lease}/objects/{b'mine'.hex()}"
    connector = aiohttp.TCPConnector(ssl=client_ssl_context(s.identity.fingerprint))
    async with aiohttp.ClientSession(connector=connector) as raw:
        async with raw.get(url) as resp:
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "unauthenticated"
        key = bytes(s.world.consumers[0].account.key)
        headers = signed_headers(key, "GET", resp.url, fingerprint=s.identity.fingerprint)
        async with raw.get(url, headers=headers) as resp:
            assert resp.status == 200
            assert await resp.read() == b"secret"
        async with raw.get(url, headers=headers) as resp:  # the same signed request again
            assert resp.status == 401
            assert (await resp.json())["error"]["code"] == "replayed_request"
        async with raw.get(f"{s.url}/v1/leases/abc/objects/zz", headers=headers) as resp:
            assert resp.status == 400


async def test_body_must_match_the_signed_hash_and_fit_the_quota(served: Served) -> None:
    s = served
    url = f"{s.url}/v1/leases/{s.lease}/objects/{b'x'.hex()}"
    connector = aiohttp.TCPConnector(ssl=client_ssl_context(s.identity.fingerprint))
    key = bytes(s.world.consumers[0].account.key)
    async with aiohttp.ClientSession(connector=connector) as raw:
        from yarl import URL

        headers = signed_headers(
            key,
            "PUT",
            URL(url),
            fingerprint=s.identity.fingerprint,
            content_sha256=hashlib.sha256(b"promised").digest(),
        )
        async with raw.put(url, data=b"delivered", headers=headers) as resp:
            assert resp.status == 422
    async with s.client() as c:
        with pytest.raises(ObjectNotFound):
            await c.get(s.lease, b"x")  # nothing partial or wrong became visible
    async with s.client() as c:  # the lease's one unit reserves 1 GiB
        await c.put(s.lease, b"a", b"1")
        usage = await c.usage(s.lease)
        assert usage["quota_bytes"] == GIB


async def test_quota_is_enforced(served: Served) -> None:
    s = served
    s.service.unit_bytes = 1 << 20  # the lease's one unit now reserves 1 MiB
    async with s.client() as c:
        await c.put(s.lease, b"fits", os.urandom(600_000))
        with pytest.raises(QuotaExceeded):
            await c.put(s.lease, b"too-much", os.urandom(600_000))
        assert (await c.usage(s.lease))["used_bytes"] == 600_000
        with pytest.raises(ObjectNotFound):
            await c.get(s.lease, b"too-much")


async def test_read_capability_names_objects_and_expires(served: Served) -> None:
    s = served
    owner_key = bytes(s.world.consumers[0].account.key)
    grantee = s.world.consumers[1]
    async with s.client() as c:
        await c.put(s.lease, b"shared", b"for carol")
        await c.put(s.lease, b"private", b"not for carol")
    now = s.view.chain_time  # capabilities expire by chain time
    cap = capability_to_header(
        issue_capability(
            owner_key,
            lease_id=s.lease,
            grantee=grantee.address,
            expires_at=now + 600,
            nonce=os.urandom(16),
            objects=[b"shared"],
        )
    )
    async with s.client(1) as g:
        assert await g.get(s.lease, b"shared", capability=cap) == b"for carol"
        with pytest.raises(Forbidden):
            await g.get(s.lease, b"private", capability=cap)
        with pytest.raises(Forbidden):
            await g.delete(s.lease, b"shared")
    expired = capability_to_header(
        issue_capability(
            owner_key,
            lease_id=s.lease,
            grantee=grantee.address,
            expires_at=now - 1,
            nonce=os.urandom(16),
            objects=[b"shared"],
        )
    )
    async with s.client(1) as g:
        with pytest.raises(Forbidden):
            await g.get(s.lease, b"shared", capability=expired)
    forged = capability_to_header(
        issue_capability(
            bytes(grantee.account.key),
            lease_id=s.lease,
            grantee=grantee.address,
            expires_at=now + 600,
            nonce=os.urandom(16),
            objects=[b"private"],
        )
    )
    async with s.client(1) as g:
        with pytest.raises((Forbidden, Unauthenticated)):
            await g.get(s.lease, b"private", capability=forged)


async def test_a_server_with_another_certificate_is_refused(served: Served) -> None:
    impostor = NodeIdentity.generate(served.world.providers[1].address)
    async with served.client(fingerprint=impostor.fingerprint) as c:
        with pytest.raises(PeerIdentityMismatch):
            await c.info()


async def test_shutdown_lets_an_upload_in_flight_finish(served: Served) -> None:
    """Graceful stop: the listening socket closes, new requests on open connections get 503,
    and an upload already being received is completed and committed whole."""
    s = served
    data = os.urandom(6 << 20)
    half = asyncio.Event()
    go_on = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield data[: 3 << 20]
        half.set()
        await go_on.wait()
        yield data[3 << 20 :]

    url = URL(f"{s.url}/v1/leases/{s.lease}/objects/{b'flight'.hex()}")
    key = bytes(s.world.consumers[0].account.key)
    headers = signed_headers(
        key, "PUT", url, fingerprint=s.identity.fingerprint, content_sha256=sha256(data)
    )
    headers["Content-Length"] = str(len(data))
    connector = aiohttp.TCPConnector(ssl=client_ssl_context(s.identity.fingerprint))
    async with aiohttp.ClientSession(connector=connector) as raw, s.client() as other:
        await other.info()  # an idle keep-alive connection, opened before the stop
        upload = asyncio.create_task(raw.put(url, data=body(), headers=headers))
        await asyncio.wait_for(half.wait(), 10)
        await asyncio.sleep(0.2)  # the node is now inside the handler, mid-body
        finishing = asyncio.create_task(s.service.finish_requests(10))
        await asyncio.sleep(0.05)
        assert not finishing.done()  # waits for the upload
        with pytest.raises(NodeRequestError, match="503 shutting_down") as refused:
            await other.info()
        assert refused.value.status == 503
        go_on.set()
        resp = await asyncio.wait_for(upload, 10)
        assert resp.status == 201
        resp.release()
        assert await asyncio.wait_for(finishing, 10) is True
    info = await s.service.store.stat(s.lease, b"flight")
    assert (info.size, info.sha256) == (len(data), sha256(data))
