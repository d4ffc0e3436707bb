"""``ShardStore.put_many``: several small objects of a lease in one transaction."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nuclux.errors import LeaseNotFound, ObjectNotFound, QuotaExceeded, UsageError
from nuclux.node.store import ShardStore
from tests.node.test_store_support import blob_files, get, open_store, put, sha, tmp_files


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ShardStore]:
    s = await open_store(tmp_path / "store")
    await s.set_lease(1, 100_000, 1000)
    yield s
    await s.close()


async def test_every_object_is_stored_and_counted(store: ShardStore, tmp_path: Path) -> None:
    items = [(f"m{i}".encode(), os.urandom(500 + i)) for i in range(30)]
    items.append((b"same-content", items[0][1]))  # deduplicated against m0
    infos = await store.put_many(1, items, created_at=42)
    assert [(i.object_id, i.sha256, i.size, i.created_at) for i in infos] == [
        (oid, sha(data), len(data), 42) for oid, data in items
    ]
    for oid, data in items:
        assert await get(store, 1, oid) == data
    used = sum(len(d) for _, d in items)
    assert (await store.lease_usage(1)).used_bytes == used
    assert len(blob_files(tmp_path / "store")) == 30
    assert tmp_files(tmp_path / "store") == []
    # replacing objects credits what they held
    again = await store.put_many(1, [(b"m1", b"short")], created_at=43)
    assert again[0].size == 5
    assert (await store.lease_usage(1)).used_bytes == used - len(items[1][1]) + 5
    assert await get(store, 1, b"m1") == b"short"


async def test_a_batch_that_does_not_fit_changes_nothing(store: ShardStore, tmp_path: Path) -> None:
    await put(store, 1, b"first", os.urandom(60_000))
    with pytest.raises(QuotaExceeded):
        await store.put_many(
            1, [(b"a", os.urandom(20_000)), (b"b", os.urandom(30_000))], created_at=1
        )
    for oid in (b"a", b"b"):
        with pytest.raises(ObjectNotFound):
            await store.stat(1, oid)
    assert (await store.lease_usage(1)).used_bytes == 60_000
    assert tmp_files(tmp_path / "store") == []
    assert len(blob_files(tmp_path / "store")) == 1
    # the in-memory reservation was released: a write that fits still fits
    await store.put_many(1, [(b"a", os.urandom(30_000))], created_at=1)


async def test_bad_arguments_are_refused(store: ShardStore) -> None:
    with pytest.raises(UsageError):
        await store.put_many(1, [(b"", b"x")], created_at=1)
    with pytest.raises(UsageError):
        await store.put_many(1, [(b"x" * 65, b"x")], created_at=1)
    with pytest.raises(LeaseNotFound, match="no lease 9"):
        await store.put_many(9, [(b"x", b"x")], created_at=1)
