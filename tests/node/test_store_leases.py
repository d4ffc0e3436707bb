"""Shard store leases: quotas, capacity accounting, closing and garbage collection."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nuclux.errors import CapacityExceeded, ObjectNotFound, QuotaExceeded, StoreError, UsageError
from nuclux.node.store import ShardStore
from tests.node.test_store_support import GRACE, blob_files, get, open_store, put, sha

CAP = 10_000


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ShardStore]:
    s = await open_store(tmp_path / "store", capacity=CAP)
    yield s
    await s.close()


async def test_capacity_is_never_overcommitted(store: ShardStore) -> None:
    await store.set_lease(1, 6000, 100)
    await store.set_lease(2, 4000, 100)
    with pytest.raises(CapacityExceeded, match="0 available"):
        await store.set_lease(3, 1, 100)
    await store.set_lease(1, 6000, 200)  # updating a lease does not count it twice
    await store.set_lease(1, 5000, 200)
    await store.set_lease(3, 1000, None)
    report = await store.capacity()
    assert (report.offered, report.reserved, report.available, report.leases) == (
        CAP,
        CAP,
        0,
        3,
    )
    with pytest.raises(CapacityExceeded, match="exceed"):
        await store.set_lease(3, 1001, None)


async def test_closed_lease_holds_its_used_bytes_until_gc(store: ShardStore) -> None:
    await store.set_lease(1, 6000, 100)
    await put(store, 1, b"a", b"x" * 2500)
    await store.close_lease(1, 50)
    report = await store.capacity()
    assert (report.reserved, report.used, report.stored) == (2500, 2500, 2500)
    with pytest.raises(CapacityExceeded):
        await store.set_lease(2, 7501, None)
    await store.set_lease(2, 7500, None)
    await store.gc(50 + GRACE)
    assert (await store.capacity()).reserved == 7500


async def test_quota_refused_as_soon_as_bytes_pass_it(store: ShardStore) -> None:
    await store.set_lease(1, 1000, None)
    await put(store, 1, b"exact", b"e" * 600)
    async with store.writer(1, b"over") as w:
        await w.write(b"o" * 400)  # exactly at the quota
        with pytest.raises(QuotaExceeded, match="this write needs 1"):
            await w.write(b"o")
    with pytest.raises(QuotaExceeded, match="needs 401"):
        async with store.writer(1, b"declared", size=401):
            pass
    usage = await store.lease_usage(1)
    assert (usage.quota_bytes, usage.used_bytes, usage.objects, usage.free_bytes) == (
        1000,
        600,
        1,
        400,
    )


async def test_a_replace_near_the_quota_streams_on_once_the_old_size_is_credited(
    store: ShardStore,
) -> None:
    """The replaced object's bytes are credited when the quota first binds; the writer must
    hand back the reservation the credit covers, or every later chunk is refused."""
    await store.set_lease(1, 7500, None)
    await put(store, 1, b"a", b"a" * 200)
    await put(store, 1, b"b", b"b" * 512)
    await put(store, 1, b"b", b"z" * 7000, chunk=100)  # 200 + 7000 fits; 200 + 512 + 7000 not
    usage = await store.lease_usage(1)
    assert (usage.used_bytes, usage.objects, usage.free_bytes) == (7200, 2, 300)
    assert await get(store, 1, b"b") == b"z" * 7000
    async with store.writer(1, b"c") as w:  # nothing is left reserved by the replace
        await w.write(b"c" * 300)
        with pytest.raises(QuotaExceeded, match="this write needs 1"):
            await w.write(b"c")


async def test_a_declared_size_is_reserved_when_the_writer_opens(store: ShardStore) -> None:
    await store.set_lease(1, 1000, None)
    async with store.writer(1, b"first", size=600) as w:
        with pytest.raises(QuotaExceeded, match="600 being written"):  # refused before a byte
            async with store.writer(1, b"second", size=600):
                pass
        async with store.writer(1, b"third", size=400) as w3:  # what is left fits
            await w3.write(b"t" * 400)
            await w3.commit()
        for _ in range(6):
            await w.write(b"f" * 100)
        await w.commit()
    usage = await store.lease_usage(1)
    assert (usage.used_bytes, usage.free_bytes) == (1000, 0)
    with pytest.raises(QuotaExceeded, match="needs 100"):  # a replace: credited its 600
        async with store.writer(1, b"first", size=700):
            pass
    async with store.writer(1, b"first", size=600) as w:  # the same size fits exactly
        await w.write(b"r" * 600)
        await w.commit()
    assert (await store.lease_usage(1)).used_bytes == 1000
    assert await get(store, 1, b"first") == b"r" * 600


async def test_quota_cannot_shrink_below_used(store: ShardStore) -> None:
    await store.set_lease(1, 1000, None)
    await put(store, 1, b"a", b"a" * 700)
    with pytest.raises(QuotaExceeded, match="700 bytes are stored"):
        await store.set_lease(1, 699, None)
    await store.set_lease(1, 700, None)
    assert (await store.lease_usage(1)).quota_bytes == 700
    await store.delete(1, b"a")
    await store.set_lease(1, 0, None)


async def test_lease_arguments_and_states(store: ShardStore) -> None:
    with pytest.raises(UsageError, match="quota_bytes"):
        await store.set_lease(1, -1, None)
    with pytest.raises(UsageError, match="expires_at"):
        await store.set_lease(1, 1, -5)
    with pytest.raises(UsageError, match="lease id"):
        await store.set_lease(2**63, 1, None)
    with pytest.raises(StoreError, match="no lease 7"):
        await store.lease_usage(7)
    with pytest.raises(StoreError, match="no lease 7"):
        await store.close_lease(7, 1)
    await store.set_lease(1, 10, 100)
    await store.close_lease(1, 40)
    await store.close_lease(1, 90)  # idempotent: the first closing time stands
    assert (await store.lease_usage(1)).closed_at == 40
    with pytest.raises(StoreError, match="closed"):
        await store.set_lease(1, 10, 100)


async def test_gc_respects_grace_and_never_touches_active_leases(
    store: ShardStore, tmp_path: Path
) -> None:
    shared = os.urandom(1000)
    await store.set_lease(1, 2000, 100)  # expires at 100
    await store.set_lease(2, 2000, 10_000)  # closes early at 50
    await store.set_lease(3, 2000, 10**12)  # active
    await store.set_lease(4, 2000, None)  # no term: only closing ends it
    for lease in (1, 2, 3, 4):
        await put(store, lease, b"shared", shared)
        await put(store, lease, b"own", b"own-%d" % lease)
    await store.close_lease(2, 50)

    nothing = await store.gc(50 + GRACE - 1)
    assert (nothing.leases_removed, nothing.objects_deleted) == (0, 0)
    first = await store.gc(50 + GRACE)
    assert (first.leases_removed, first.objects_deleted, first.bytes_freed) == (1, 2, 1005)
    assert (first.blobs_removed, first.blob_bytes_freed) == (1, 5)
    with pytest.raises(StoreError, match="no lease 2"):
        await store.lease_usage(2)
    assert await get(store, 1, b"own") == b"own-1"  # expired, but still within the grace

    second = await store.gc(100 + GRACE)
    assert (second.leases_removed, second.objects_deleted) == (1, 2)
    much_later = await store.gc(10**11)
    assert much_later.leases_removed == 0
    for lease in (3, 4):
        assert await get(store, lease, b"shared") == shared
        assert (await store.lease_usage(lease)).objects == 2
    assert sha(shared) in blob_files(tmp_path / "store")
    with pytest.raises(ObjectNotFound):
        await store.stat(1, b"own")


async def test_gc_during_a_write_refuses_the_commit(store: ShardStore, tmp_path: Path) -> None:
    await store.set_lease(1, 3000, 100)
    async with store.writer(1, b"late") as w:
        await w.write(b"abc")
        assert (await store.gc(100 + GRACE)).leases_removed == 1
        with pytest.raises(StoreError, match="no lease 1"):
            await w.commit()
    assert blob_files(tmp_path / "store") == set()
    assert list((tmp_path / "store" / "tmp").iterdir()) == []
