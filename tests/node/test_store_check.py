"""The self-check at open: crash debris is removed, outside damage is repaired and reported."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from nuclux.errors import ObjectNotFound, StoreError
from nuclux.node.store import ShardStore
from nuclux.node.store_index import SCHEMA_VERSION
from nuclux.node.store_types import blob_relpath
from tests.node.test_store_support import blob_files, get, open_store, put, sha, tmp_files


async def make_store(root: Path) -> dict[bytes, bytes]:
    """A closed store with three objects under lease 1 (two share content) and one under 2."""
    objs = {b"a": b"alpha" * 1000, b"b": b"bravo" * 1000, b"c": b"alpha" * 1000}
    async with await open_store(root) as s:
        await s.set_lease(1, 1 << 20, None)
        await s.set_lease(2, 1 << 20, None)
        for oid, data in objs.items():
            await put(s, 1, oid, data)
        await put(s, 2, b"z", b"zulu")
    return objs


def sql(root: Path, statement: str, *args: object) -> None:
    db = sqlite3.connect(root / "index.sqlite3")
    try:
        with db:
            db.execute(statement, args)
    finally:
        db.close()


async def test_clean_store_reports_nothing(tmp_path: Path) -> None:
    await make_store(tmp_path)
    async with await open_store(tmp_path) as s:
        r = s.check_report
        assert (r.blobs_checked, r.content_verified, r.lost_data) == (3, True, False)
        assert r.tmp_removed == r.orphans_removed == r.refs_repaired == r.usage_repaired == 0


async def test_crash_debris_is_removed(tmp_path: Path) -> None:
    await make_store(tmp_path)
    (tmp_path / "tmp" / "w-half-written").write_bytes(b"partial")
    (tmp_path / "tmp" / "subdir").mkdir()
    orphan = b"renamed but never committed"
    path = tmp_path / blob_relpath(sha(orphan))
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(orphan)
    (tmp_path / "blobs" / "zz").mkdir()
    (tmp_path / "blobs" / "zz" / "not-a-blob-name").write_bytes(b"?")
    async with await open_store(tmp_path) as s:
        r = s.check_report
        assert (r.tmp_removed, r.orphans_removed, r.objects_dropped) == (2, 2, 0)
        assert not (tmp_path / "blobs" / "zz").exists()
        assert await get(s, 1, b"a") == b"alpha" * 1000
    assert tmp_files(tmp_path) == []
    assert not path.exists()


async def test_missing_blob_drops_its_objects_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    objs = await make_store(tmp_path)
    (tmp_path / blob_relpath(sha(objs[b"a"]))).unlink()
    with caplog.at_level(logging.WARNING, logger="nuclux.node.store"):
        s = await open_store(tmp_path)
    try:
        r = s.check_report
        assert (r.blobs_missing, r.objects_dropped, r.bytes_dropped) == (1, 2, 10_000)
        assert {(d.lease_id, d.object_id, d.reason) for d in r.dropped} == {
            (1, b"a", "blob file missing"),
            (1, b"c", "blob file missing"),
        }
        assert r.lost_data
        with pytest.raises(ObjectNotFound):
            await s.stat(1, b"c")
        usage = await s.lease_usage(1)
        assert (usage.used_bytes, usage.objects) == (5000, 1)
    finally:
        await s.close()
    assert "dropped lease 1 object 0x61" in caplog.text


async def test_wrong_size_and_bad_content_are_quarantined(tmp_path: Path) -> None:
    objs = await make_store(tmp_path)
    short = tmp_path / blob_relpath(sha(objs[b"a"]))
    short.write_bytes(b"alpha")
    rotten = tmp_path / blob_relpath(sha(objs[b"b"]))
    rotten.write_bytes(b"BRAVO" * 1000)  # same size, flipped content
    s = await open_store(tmp_path, verify_content=False)
    assert s.check_report.blobs_wrong_size == 1
    assert s.check_report.objects_dropped == 2  # the size alone did not reveal the rot
    await s.close()
    async with await open_store(tmp_path) as s:
        r = s.check_report
        assert (r.blobs_quarantined, r.objects_dropped, r.content_verified) == (1, 1, True)
        assert r.dropped[0].reason == "blob content does not match its digest"
        assert await s.list_objects(1) == []
        assert await get(s, 2, b"z") == b"zulu"
    quarantined = sorted(p.name for p in (tmp_path / "quarantine").iterdir())
    assert quarantined == sorted([sha(objs[b"a"]).hex(), sha(objs[b"b"]).hex()])
    assert blob_files(tmp_path) == {sha(b"zulu")}


async def test_refcounts_and_usage_are_recomputed(tmp_path: Path) -> None:
    objs = await make_store(tmp_path)
    sql(tmp_path, "UPDATE blobs SET refs = 7 WHERE sha256 = ?", sha(objs[b"a"]))
    sql(tmp_path, "UPDATE leases SET used_bytes = 1 WHERE lease_id = 1")
    sql(tmp_path, "DELETE FROM objects WHERE lease_id = 2")  # zulu's blob loses its object
    async with await open_store(tmp_path) as s:
        r = s.check_report
        assert (r.refs_repaired, r.usage_repaired, r.orphans_removed) == (2, 2, 1)
        assert r.objects_dropped == 0
        assert (await s.lease_usage(1)).used_bytes == 15_000
        assert (await s.lease_usage(2)).used_bytes == 0
        await s.delete(1, b"a")
        await s.delete(1, b"c")
    assert blob_files(tmp_path) == {sha(objs[b"b"])}


async def test_rows_without_blob_or_lease_are_dropped(tmp_path: Path) -> None:
    await make_store(tmp_path)
    sql(tmp_path, "INSERT INTO objects VALUES (1, X'71', ?, 3, 0, NULL)", sha(b"nope"))
    sql(tmp_path, "DELETE FROM leases WHERE lease_id = 2")
    async with await open_store(tmp_path) as s:
        reasons = sorted(d.reason for d in s.check_report.dropped)
        assert reasons == ["no blob row for its sha256", "no lease row"]
    assert sha(b"zulu") not in blob_files(tmp_path)


async def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    await make_store(tmp_path)
    sql(tmp_path, "UPDATE schema_version SET version = 99")
    with pytest.raises(StoreError, match="schema version 99"):
        await open_store(tmp_path)
    sql(tmp_path, "UPDATE schema_version SET version = ?", SCHEMA_VERSION)
    s: ShardStore = await open_store(tmp_path)  # the failed open released the lock
    await s.close()


async def test_blocks_stored_under_their_merkle_root_are_verified_by_it(tmp_path: Path) -> None:
    from nuclux.core.merkle import root_of_bytes
    from nuclux.core.reference import block_object_id

    good, bad = b"g" * 3000, b"b" * 3000
    ids = [block_object_id(bytes(16), i, 0) for i in (0, 1)]
    async with await open_store(tmp_path) as s:
        await s.set_lease(1, 1 << 20, None)
        for oid, data in zip(ids, (good, bad), strict=True):
            async with s.writer(1, oid, size=len(data), merkle_root=root_of_bytes(data)) as w:
                await w.write(data)
                info = await w.commit()
            assert (info.sha256, info.root_digest) == (root_of_bytes(data), True)
    rotten = tmp_path / blob_relpath(root_of_bytes(bad))
    rotten.write_bytes(b"B" + bad[1:])
    async with await open_store(tmp_path) as s:
        r = s.check_report
        assert (r.blobs_quarantined, r.objects_dropped) == (1, 1)
        assert [d.object_id for d in r.dropped] == [ids[1]]
        assert await get(s, 1, ids[0]) == good  # the intact block passed by its root
