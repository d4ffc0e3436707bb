"""The storage protocol's node endpoints (storage-protocol.md sections 2-3) end to end on
loopback: share block roots, co-signed revisions, removals, the delete guard, restarts."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from nuclux.chain.revision import Revision
from nuclux.core.capability import capability_to_header, issue_capability
from nuclux.core.merkle import leaf_count, root_of_bytes
from nuclux.core.reference import block_object_id, file_prefix
from nuclux.core.units import GIB
from nuclux.errors import Forbidden, IntegrityError, ObjectNotFound, Unauthenticated
from nuclux.net.client import (
    NodeClient,
    NodeRequestError,
    RevisionConflict,
    RevisionMismatch,
)
from nuclux.net.signing import signed_headers
from nuclux.net.tls import client_ssl_context
from nuclux.node.revisions import RevisionSigner
from nuclux.node.shares import ShareEntry, lease_root
from nuclux.node.store import ShardStore
from tests.node.conftest import Served

FA, FB, FC = bytes(range(16)), bytes(range(16, 32)), bytes(range(32, 48))
B = 4096


async def put_share(c: NodeClient, lease: int, fid: bytes, i: int, data: bytes) -> ShareEntry:
    for j in range(0, len(data), B):
        await c.put(lease, block_object_id(fid, i, j // B), data[j : j + B])
    return ShareEntry(fid, i, root_of_bytes(data), leaf_count(len(data)), len(data))


def blob(s: Served, digest: bytes) -> Path:
    """The blob file the node's store keeps under ``digest``."""
    (path,) = (s.service.store.root / "blobs").rglob(digest.hex())
    return path


def signed(s: Served, entries: list[ShareEntry], revision: int) -> Revision:
    return Revision(
        s.lease, revision, sum(e.size for e in entries), len(entries), lease_root(entries)
    )


async def revise(
    s: Served,
    c: NodeClient,
    entries: list[ShareEntry],
    revision: int,
    remove: tuple[tuple[bytes, int], ...] = (),
    *,
    signer: int = 0,
) -> bytes:
    rev = signed(s, entries, revision)
    return await c.revise(
        s.lease,
        revision=revision,
        shares=[e.key for e in entries],
        remove=remove,
        used_bytes=rev.used_bytes,
        root=rev.root,
        signature=s.world.consumers[signer].sign_revision(rev),
    )


def operator_signed(s: Served, rev: Revision, signature: bytes) -> bool:
    signer = RevisionSigner.for_ledger(s.world.operators[0])
    return signer.signer_of(rev, signature) == s.world.operators[0].address


async def test_share_block_roots(served: Served) -> None:
    s = served
    data = os.urandom(3 * B + 1500)
    async with s.client() as c:
        e = await put_share(c, s.lease, FA, 2, data)
        roots = await c.shares(s.lease, FA, 2)
        assert (roots.blocks, roots.block_bytes, roots.size) == (4, B, len(data))
        assert (roots.share_root, roots.leaf_count) == (e.root, leaf_count(len(data)))
        assert roots.block_roots[3] == root_of_bytes(data[3 * B :])
        with pytest.raises(ObjectNotFound, match="no block of share 3"):
            await c.shares(s.lease, FA, 3)
        await c.put(s.lease, block_object_id(FB, 0, 0), b"x" * B)
        await c.put(s.lease, block_object_id(FB, 0, 2), b"x")
        with pytest.raises(NodeRequestError, match="409 malformed_share") as err:
            await c.shares(s.lease, FB, 0)
        assert "block 1 is missing" in str(err.value)


async def test_a_capability_holder_reads_block_roots(served: Served) -> None:
    s = served
    data = os.urandom(B + 10)
    async with s.client() as c:
        e = await put_share(c, s.lease, FA, 0, data)
        await put_share(c, s.lease, FB, 0, data)
    cap = capability_to_header(
        issue_capability(
            bytes(s.world.consumers[0].account.key),
            lease_id=s.lease,
            grantee=s.world.consumers[1].address,
            expires_at=s.view.chain_time + 600,
            nonce=os.urandom(16),
            prefix=file_prefix(FA),
        )
    )
    async with s.client(1) as g:
        assert (await g.shares(s.lease, FA, 0, capability=cap)).share_root == e.root
        with pytest.raises(Forbidden, match="does not cover"):
            await g.shares(s.lease, FB, 0, capability=cap)
        with pytest.raises(Forbidden, match="not the consumer"):
            await g.shares(s.lease, FA, 0)
        with pytest.raises(Forbidden):
            await g.latest_revision(s.lease)


async def test_a_revision_is_co_signed_stored_and_returned(served: Served) -> None:
    s = served
    a, b = os.urandom(2 * B + 100), os.urandom(B)
    async with s.client() as c:
        assert await c.latest_revision(s.lease) is None
        ea, eb = await put_share(c, s.lease, FA, 0, a), await put_share(c, s.lease, FB, 5, b)
        await c.put(s.lease, b"f/" + FA.hex().encode() + b"/m", b"manifest")
        sig = await revise(s, c, [eb, ea], 1)
        rev = signed(s, [eb, ea], 1)
        assert operator_signed(s, rev, sig)
        latest = await c.latest_revision(s.lease)
        assert latest is not None
        assert (latest.lease_id, latest.revision, latest.share_count) == (s.lease, 1, 2)
        assert (latest.used_bytes, latest.root) == (len(a) + len(b), rev.root)
        assert latest.shares == ((FB, 5), (FA, 0))  # the client's order
        assert latest.entries == (
            (eb.root, eb.leaf_count, len(b)),
            (ea.root, ea.leaf_count, len(a)),
        )
        assert latest.provider_signature == sig
        assert latest.consumer_signature == s.world.consumers[0].sign_revision(rev)


async def test_revision_refusals(served: Served) -> None:
    s = served
    a = os.urandom(B + 1)
    async with s.client() as c:
        ea = await put_share(c, s.lease, FA, 0, a)
        with pytest.raises(RevisionConflict) as conflict:
            await revise(s, c, [ea], 2)  # the first revision is 1
        assert conflict.value.latest is None
        await revise(s, c, [ea], 1)
        with pytest.raises(RevisionConflict) as conflict:
            await revise(s, c, [ea], 1)  # a client that lost state learns where it is
        latest = conflict.value.latest
        assert latest is not None
        assert latest.revision == 1
        assert latest.shares == ((FA, 0),)
        rev = signed(s, [ea], 2)
        with pytest.raises(RevisionMismatch) as mismatch:
            await c.revise(
                s.lease,
                revision=2,
                shares=[ea.key],
                used_bytes=rev.used_bytes,
                root=bytes(32),
                signature=s.world.consumers[0].sign_revision(rev),
            )
        assert (mismatch.value.root, mismatch.value.used_bytes) == (rev.root, len(a))
        assert mismatch.value.share_count == 1
        with pytest.raises(Unauthenticated, match="not by lease"):
            await revise(s, c, [ea], 2, signer=1)  # signed by someone else
        with pytest.raises(Unauthenticated):
            await c.revise(
                s.lease,
                revision=2,
                shares=[ea.key],
                used_bytes=rev.used_bytes,
                root=rev.root,
                signature=b"\x00" * 64 + b"\x1b",
            )
        assert (await c.latest_revision(s.lease)).revision == 1  # type: ignore[union-attr]
    async with s.client(1) as stranger:
        with pytest.raises(Forbidden):
            await revise(s, stranger, [ea], 2, signer=1)


async def test_malformed_or_missing_shares_are_not_co_signed(served: Served) -> None:
    s = served
    async with s.client() as c:
        await c.put(s.lease, block_object_id(FA, 0, 0), b"a" * 3000)  # not a power of two
        await c.put(s.lease, block_object_id(FA, 0, 1), b"a")
        fake = ShareEntry(FA, 0, bytes(32), 4, 3001)
        with pytest.raises(NodeRequestError, match="409 malformed_share"):
            await revise(s, c, [fake], 1)
        with pytest.raises(NodeRequestError, match=r"409 malformed_share.*no blocks"):
            await revise(s, c, [ShareEntry(FC, 0, bytes(32), 1, 1)], 1)


async def test_removal_goes_through_a_revision_and_delete_is_guarded(served: Served) -> None:
    s = served
    a, b = os.urandom(2 * B), os.urandom(B + 7)
    async with s.client() as c:
        ea, eb = await put_share(c, s.lease, FA, 0, a), await put_share(c, s.lease, FB, 1, b)
        await revise(s, c, [ea, eb], 1)
        for attempt in (
            c.delete(s.lease, block_object_id(FA, 0, 0)),
            c.put(s.lease, block_object_id(FA, 0, 1), b"other"),
            c.put(s.lease, block_object_id(FA, 0, 2), b"appended"),
        ):
            with pytest.raises(NodeRequestError, match="409 in_revision"):
                await attempt
        assert await c.get(s.lease, block_object_id(FA, 0, 1)) == a[B:]
        # blocks in no revision (an upload in progress, or abandoned) delete plainly
        await c.put(s.lease, block_object_id(FC, 0, 0), b"abandoned")
        await c.delete(s.lease, block_object_id(FC, 0, 0))
        used = (await c.usage(s.lease))["used_bytes"]
        # a refused revision removes nothing, even when it asked for removals
        rev = signed(s, [eb], 2)
        with pytest.raises(RevisionMismatch):
            await c.revise(
                s.lease,
                revision=2,
                shares=[eb.key],
                remove=[ea.key],
                used_bytes=rev.used_bytes + 1,
                root=rev.root,
                signature=s.world.consumers[0].sign_revision(rev),
            )
        assert await c.get(s.lease, block_object_id(FA, 0, 0)) == a[:B]
        await revise(s, c, [eb], 2, remove=(ea.key, (FC, 9)))  # FC/9 never existed: no-op
        with pytest.raises(ObjectNotFound):
            await c.get(s.lease, block_object_id(FA, 0, 0))
        assert (await c.usage(s.lease))["used_bytes"] == used - len(a)
        await c.put(s.lease, block_object_id(FA, 0, 0), b"free to reuse")
        latest = await c.latest_revision(s.lease)
        assert latest is not None
        assert latest.shares == (eb.key,)


async def test_concurrent_revision_requests_take_turns(served: Served) -> None:
    s = served
    a = os.urandom(B)
    async with s.client() as c, s.client() as c2:
        ea = await put_share(c, s.lease, FA, 0, a)
        results = await asyncio.gather(
            revise(s, c, [ea], 1), revise(s, c2, [ea], 1), return_exceptions=True
        )
        assert sum(isinstance(r, bytes) for r in results) == 1
        assert sum(isinstance(r, RevisionConflict) for r in results) == 1


async def test_bad_revision_bodies(served: Served) -> None:
    s = served
    url = URL(f"{s.url}/v1/leases/{s.lease}/revisions")
    key = bytes(s.world.consumers[0].account.key)
    connector = aiohttp.TCPConnector(ssl=client_ssl_context(s.identity.fingerprint))
    async with aiohttp.ClientSession(connector=connector) as raw:
        bodies = (b"not json", b'{"revision": 1}', b"[]", b"[" * 100_000, b"\xff")
        for body, status in ((b, 400) for b in bodies):
            sha = hashlib.sha256(body).digest()
            headers = signed_headers(
                key, "POST", url, fingerprint=s.identity.fingerprint, content_sha256=sha
            )
            async with raw.post(url, data=body, headers=headers) as resp:
                assert resp.status == status
                assert (await resp.json())["error"]["code"] == "bad_request"
        headers = signed_headers(
            key,
            "POST",
            url,
            fingerprint=s.identity.fingerprint,
            content_sha256=hashlib.sha256(b"{}").digest(),
        )
        async with raw.post(url, data=b'{"x": 1}', headers=headers) as resp:
            assert resp.status == 422  # not the body that was signed
        headers = signed_headers(
            key,
            "POST",
            url,
            fingerprint=s.identity.fingerprint,
            content_sha256=hashlib.sha256(b"").digest(),
        )
        headers["Content-Length"] = str((4 << 20) + 1)
        async with raw.post(url, data=b"", headers=headers) as resp:
            assert resp.status == 413


async def test_revisions_survive_a_restart(served: Served, tmp_path: Path) -> None:
    s = served
    a = os.urandom(B + 3)
    async with s.client() as c:
        ea = await put_share(c, s.lease, FA, 0, a)
        sig = await revise(s, c, [ea], 1)
    old = s.service.store
    await old.close()
    s.service.store = await ShardStore.open(tmp_path / "store", 8 * GIB, grace_seconds=60)
    try:
        async with s.client() as c:
            latest = await c.latest_revision(s.lease)
            assert latest is not None
            assert (latest.revision, latest.provider_signature) == (1, sig)
            with pytest.raises(NodeRequestError, match="in_revision"):
                await c.delete(s.lease, block_object_id(FA, 0, 0))
            assert await revise(s, c, [ea], 2)
    finally:
        await s.service.store.close()
        s.service.store = old  # the fixture closes this one (again: a no-op)


async def test_a_block_put_signs_its_merkle_root_and_is_stored_under_it(served: Served) -> None:
    """A share block's PUT signs the block's Merkle root (X-Nuclux-Content-Root), not its
    SHA-256: the node checks that root, names the blob by it and serves it back under it."""
    s = served
    data = os.urandom(3 * B + 77)
    root = root_of_bytes(data)
    oid = block_object_id(FB, 1, 0)
    async with s.client() as c:
        stored = await c.put(s.lease, oid, data)
        assert (stored.sha256, stored.size, stored.root_digest) == (root, len(data), True)
        assert blob(s, root).read_bytes() == data
        assert await c.get(s.lease, oid) == data  # checked against the root header
        listed = {o.object_id: o for o in await c.list(s.lease)}
        assert listed[oid].root_digest
        assert listed[oid].sha256 == root
        plain = await c.put(s.lease, b"plain", data)  # any other object: its SHA-256
        assert (plain.sha256, plain.root_digest) == (hashlib.sha256(data).digest(), False)

    url = URL(f"{s.url}/v1/leases/{s.lease}/objects/{block_object_id(FB, 1, 1).hex()}")
    key = bytes(s.world.consumers[0].account.key)
    fp = s.identity.fingerprint
    connector = aiohttp.TCPConnector(ssl=client_ssl_context(fp))
    async with aiohttp.ClientSession(connector=connector) as raw:

        async def put(target: URL, headers: dict[str, str]) -> tuple[int, str]:
            async with raw.put(target, data=data, headers=headers) as resp:
                return resp.status, (await resp.json())["error"]["code"]

        wrong = signed_headers(key, "PUT", url, fingerprint=fp, content_root=bytes(32))
        assert await put(url, wrong) == (422, "integrity")  # another root: nothing stored
        both = signed_headers(key, "PUT", url, fingerprint=fp, content_root=root)
        both["X-Nuclux-Content-SHA256"] = hashlib.sha256(data).hexdigest()
        assert (await put(url, both))[0] == 401  # one digest is signed, not two
        other = URL(f"{s.url}/v1/leases/{s.lease}/objects/00ff")
        not_block = signed_headers(key, "PUT", other, fingerprint=fp, content_root=root)
        assert await put(other, not_block) == (400, "bad_request")
    async with s.client() as c:
        assert {o.object_id for o in await c.list(s.lease)} == {oid, b"plain"}


async def test_a_root_addressed_block_that_rots_fails_its_read_check(served: Served) -> None:
    s = served
    data = os.urandom(2 * B)
    oid = block_object_id(FC, 0, 0)
    async with s.client() as c:
        stored = await c.put(s.lease, oid, data)
        path = blob(s, stored.sha256)
        os.chmod(path, 0o644)
        path.write_bytes(bytes([data[0] ^ 1]) + data[1:])
        with pytest.raises(IntegrityError, match="does not match"):
            await c.get(s.lease, oid)
