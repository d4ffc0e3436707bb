"""Shares and revisions in the shard store: block roots computed on write (blocks only), the
schema upgrade from version 1, revisions that persist, frozen shares, removals, kill -9."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from nuclux.core.merkle import leaf_count, root_of_bytes
from nuclux.core.reference import block_object_id
from nuclux.errors import ObjectNotFound
from nuclux.node.shares import (
    MalformedShare,
    RevisionConflict,
    RevisionMismatch,
    RevisionRequest,
    ShareEntry,
    ShareInRevision,
    ShareKey,
    lease_root,
)
from nuclux.node.store import ShardStore
from nuclux.node.store_index import SCHEMA_VERSION
from tests.node.test_store_support import get, open_store, put, tmp_files

FA, FB = bytes(range(16)), bytes(range(16, 32))
B = 4096
SIG = b"\x01" * 65


def merkle_roots(root: Path) -> dict[bytes, bytes | None]:
    db = sqlite3.connect(root / "index.sqlite3")
    try:
        return dict(db.execute("SELECT object_id, merkle_root FROM objects").fetchall())
    finally:
        db.close()


async def put_share(store: ShardStore, lease: int, fid: bytes, i: int, data: bytes) -> None:
    for j in range(0, len(data), B):
        await put(store, lease, block_object_id(fid, i, j // B), data[j : j + B], chunk=1000)


def entry(fid: bytes, i: int, data: bytes) -> ShareEntry:
    return ShareEntry(fid, i, root_of_bytes(data), leaf_count(len(data)), len(data))


def req(
    revision: int,
    entries: list[ShareEntry],
    remove: tuple[ShareKey, ...] = (),
    *,
    used: int | None = None,
) -> RevisionRequest:
    return RevisionRequest(
        revision,
        tuple(e.key for e in entries),
        remove,
        sum(e.size for e in entries) if used is None else used,
        lease_root(entries),
        SIG,
    )


async def co_sign(store: ShardStore, lease: int, r: RevisionRequest, at: int = 1) -> None:
    plan = await store.plan_revision(lease, r)
    assert (plan.used_bytes, plan.root) == (r.used_bytes, r.root)
    await store.commit_revision(lease, r, plan, b"\x02" * 65, at)


async def test_blocks_get_merkle_roots_on_write_and_plain_objects_do_not(tmp_path: Path) -> None:
    data = os.urandom(2 * B + 777)
    async with await open_store(tmp_path) as s:
        await s.set_lease(1, 1 << 20, None)
        await put_share(s, 1, FA, 0, data)
        await put(s, 1, b"plain", data[:B])
        await put(s, 1, b"f/" + FA.hex().encode() + b"/s/0/01", data[:B])  # not a block id
        summary = await s.share(1, FA, 0)
        assert summary is not None
        assert (summary.root, summary.leaf_count, summary.blocks) == (
            root_of_bytes(data),
            leaf_count(len(data)),
            3,
        )
        assert await s.share(1, FA, 1) is None
    roots = merkle_roots(tmp_path)
    assert roots[block_object_id(FA, 0, 2)] == root_of_bytes(data[2 * B :])
    assert roots[b"plain"] is None
    assert roots[b"f/" + FA.hex().encode() + b"/s/0/01"] is None


async def test_a_replaced_block_gets_its_new_root(tmp_path: Path) -> None:
    async with await open_store(tmp_path) as s:
        await s.set_lease(1, 1 << 20, None)
        oid = block_object_id(FA, 0, 0)
        await put(s, 1, oid, b"x" * 3000)
        await put(s, 1, oid, b"y" * 2000)
        summary = await s.share(1, FA, 0)
        assert summary is not None
        assert summary.root == root_of_bytes(b"y" * 2000)


async def test_version_1_index_is_upgraded_in_place(tmp_path: Path) -> None:
    data = os.urandom(B + 10)
    async with await open_store(tmp_path) as s:
        await s.set_lease(1, 1 << 20, None)
        await put_share(s, 1, FA, 2, data)
        await put(s, 1, b"plain", b"p" * 100)
    db = sqlite3.connect(tmp_path / "index.sqlite3")  # make it what version 1 wrote
    with db:
        db.execute("ALTER TABLE objects DROP COLUMN merkle_root")
        db.execute("DROP TABLE revision_shares")
        db.execute("DROP TABLE revisions")
        db.execute("UPDATE schema_version SET version = 1")
    db.close()
    assert SCHEMA_VERSION == 2
    async with await open_store(tmp_path) as s:
        summary = await s.share(1, FA, 2)
        assert summary is not None
        assert summary.root == root_of_bytes(data)
        assert await get(s, 1, b"plain") == b"p" * 100
        assert await s.latest_revision(1) is None
    assert merkle_roots(tmp_path)[b"plain"] is None
    db = sqlite3.connect(tmp_path / "index.sqlite3")
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(2,)]
    db.close()


async def test_revisions_persist_freeze_their_shares_and_remove_by_revision(
    tmp_path: Path,
) -> None:
    a, b = os.urandom(2 * B + 5), os.urandom(B)
    async with await open_store(tmp_path) as s:
        await s.set_lease(1, 1 << 20, None)
        await put_share(s, 1, FA, 0, a)
        await put_share(s, 1, FB, 1, b)
        await put(s, 1, b"manifest", b"m" * 50)
        ea, eb = entry(FA, 0, a), entry(FB, 1, b)
        await co_sign(s, 1, req(1, [ea, eb]), at=77)
        with pytest.raises(ShareInRevision):
            await s.delete(1, block_object_id(FA, 0, 1))
        with pytest.raises(ShareInRevision):
            await put(s, 1, block_object_id(FA, 0, 1), b"z" * B)
        with pytest.raises(ShareInRevision):  # not even a block past the end
            await put(s, 1, block_object_id(FA, 0, 3), b"z")
        await s.delete(1, b"manifest")  # other objects stay free
    async with await open_store(tmp_path) as s:  # survives a restart
        latest = await s.latest_revision(1)
        assert latest is not None
        assert (latest.revision, latest.entries, latest.signed_at) == (1, (ea, eb), 77)
        assert (latest.used_bytes, latest.share_count) == (len(a) + len(b), 2)
        assert (latest.consumer_sig, latest.provider_sig) == (SIG, b"\x02" * 65)
        # the next revision drops share A: its blocks go with that revision, not before
        used_before = (await s.lease_usage(1)).used_bytes
        plan = await s.plan_revision(1, req(2, [eb], ((FA, 0),), used=1))
        assert plan.used_bytes == len(b)  # planning removes nothing
        assert await get(s, 1, block_object_id(FA, 0, 0)) == a[:B]
        await co_sign(s, 1, req(2, [eb], ((FA, 0),)))
        with pytest.raises(ObjectNotFound):
            await get(s, 1, block_object_id(FA, 0, 0))
        assert (await s.lease_usage(1)).used_bytes == used_before - len(a)
        await put(s, 1, block_object_id(FA, 0, 0), b"free again")  # no longer frozen
        with pytest.raises(RevisionConflict) as conflict:
            await s.plan_revision(1, req(2, [eb]))
        assert conflict.value.latest is not None
        assert conflict.value.latest.revision == 2


async def test_check_writable_follows_revisions_and_the_commit_stays_the_authority(
    tmp_path: Path,
) -> None:
    """The pre-body check answers from memory for shares no revision lists; a share its set
    lists is checked against the index; a set that lags the index only moves the refusal
    to the commit."""
    a, b = os.urandom(B), os.urandom(B)
    a0, a1, b0 = block_object_id(FA, 0, 0), block_object_id(FA, 0, 1), block_object_id(FB, 1, 0)
    async with await open_store(tmp_path) as s:
        await s.set_lease(1, 1 << 20, None)
        await s.check_writable(1, a0)  # no revision yet
        await put_share(s, 1, FA, 0, a)
        await put_share(s, 1, FB, 1, b)
        await co_sign(s, 1, req(1, [entry(FA, 0, a)]))
        for oid in (a0, a1):
            with pytest.raises(ShareInRevision):
                await s.check_writable(1, oid)
        await s.check_writable(1, b0)  # share B is not in the revision
        await s.check_writable(1, b"plain")  # not a block: never frozen
    async with await open_store(tmp_path) as s:  # a fresh store reads the set from the index
        with pytest.raises(ShareInRevision):
            await s.check_writable(1, a1)
        s._frozen[1] = frozenset({(FB, 1)})  # a set that lags the index both ways
        await s.check_writable(1, b0)  # listed: the index says it is free
        await s.check_writable(1, a1)  # not listed: let through before the body ...
        with pytest.raises(ShareInRevision):  # ... and refused by the commit
            await put(s, 1, a1, b"z" * B)
        assert tmp_files(tmp_path) == []  # its temp file is gone, nothing was stored
        with pytest.raises(ObjectNotFound):
            await get(s, 1, a1)
        await co_sign(s, 1, req(2, [entry(FB, 1, b)], ((FA, 0),)))
        await s.check_writable(1, a0)  # removed by revision 2
        with pytest.raises(ShareInRevision):
            await s.check_writable(1, b0)


async def test_a_share_changed_while_signing_is_not_committed(tmp_path: Path) -> None:
    a = os.urandom(B + 1)
    async with await open_store(tmp_path) as s:
        await s.set_lease(1, 1 << 20, None)
        await put_share(s, 1, FA, 0, a)
        r = req(1, [entry(FA, 0, a)])
        plan = await s.plan_revision(1, r)
        await put(s, 1, block_object_id(FA, 0, 1), b"changed")  # an upload lands meanwhile
        with pytest.raises(RevisionMismatch, match="changed while"):
            await s.commit_revision(1, r, plan, b"\x02" * 65, 1)
        assert await s.latest_revision(1) is None


async def test_malformed_and_missing_shares_are_refused(tmp_path: Path) -> None:
    async with await open_store(tmp_path) as s:
        await s.set_lease(1, 1 << 20, None)
        await put(s, 1, block_object_id(FA, 0, 0), b"a" * B)
        await put(s, 1, block_object_id(FA, 0, 2), b"a" * 10)
        with pytest.raises(MalformedShare, match="block 1 is missing"):
            await s.share(1, FA, 0)
        fake = ShareEntry(FA, 0, bytes(32), 1, 1)
        with pytest.raises(MalformedShare, match="block 1 is missing"):
            await s.plan_revision(1, req(1, [fake]))
        with pytest.raises(MalformedShare, match="no blocks"):
            await s.plan_revision(1, req(1, [ShareEntry(FB, 0, bytes(32), 1, 1)]))


async def test_gc_forgets_a_lease_revision(tmp_path: Path) -> None:
    a = os.urandom(100)
    async with await open_store(tmp_path) as s:
        await s.set_lease(1, 1 << 20, None)
        await put_share(s, 1, FA, 0, a)
        await co_sign(s, 1, req(1, [entry(FA, 0, a)]))
        await s.close_lease(1, 10)
        await s.gc(10_000)
        await s.set_lease(1, 1 << 20, None)  # the id is free again (a fresh chain, say)
        assert await s.latest_revision(1) is None


CHILD = r"""
import asyncio, hashlib, sys
from pathlib import Path
from nuclux.core.merkle import leaf_count, root_of_bytes
from nuclux.core.reference import block_object_id
from nuclux.node.shares import RevisionRequest, ShareEntry, lease_root
from nuclux.node.store import ShardStore

def share(n: int) -> bytes:
    return hashlib.sha256(b"share/%d" % n).digest() * (40 + n)

async def main(root: str) -> None:
    store = await ShardStore.open(Path(root), 1 << 30, grace_seconds=10)
    await store.set_lease(1, 1 << 29, None)
    fid = bytes(16)
    entries = []
    n = 0
    latest = await store.latest_revision(1)
    if latest is not None:
        entries, n = list(latest.entries), latest.revision
    print("ready", flush=True)
    while True:
        data = share(n)
        async with store.writer(1, block_object_id(fid, n % 256, 0)) as w:
            await w.write(data)
            await w.commit()
        size = len(data)
        entries.append(ShareEntry(fid, n % 256, root_of_bytes(data), leaf_count(size), size))
        n += 1
        used = sum(e.size for e in entries)
        keys = tuple(e.key for e in entries)
        req = RevisionRequest(n, keys, (), used, lease_root(entries), b"\x01" * 65)
        plan = await store.plan_revision(1, req)
        await store.commit_revision(1, req, plan, b"\x02" * 65, n)
        print(f"committed {n}", flush=True)
        if n == 200:
            await asyncio.sleep(3600)

asyncio.run(main(sys.argv[1]))
"""


def kill_after(root: Path, commits: int) -> int:
    """Run the child until it has reported ``commits`` more revisions, SIGKILL it; the last
    revision number it reported."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    last, seen = 0, 0
    for line in child.stdout:
        if line.startswith("committed"):
            last, seen = int(line.split()[1]), seen + 1
            if seen >= commits:
                break
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    return last


async def test_a_reported_revision_survives_kill_9(tmp_path: Path) -> None:
    """A revision is durable once commit_revision returns (the node answers only then): kill
    -9 right after a report never loses it, and the reopened store is consistent."""
    for commits in (1, 3, 7):
        reported = kill_after(tmp_path, commits)
        async with await open_store(tmp_path) as s:
            latest = await s.latest_revision(1)
            assert latest is not None
            assert latest.revision in (reported, reported + 1)  # the next may have landed
            assert latest.share_count == latest.revision
            assert latest.root == lease_root(latest.entries)
            for e in latest.entries:  # every listed share is there, as listed
                summary = await s.share(1, e.file_id, e.index)
                assert summary is not None
                assert summary.entry == e
            assert not s.check_report.lost_data
