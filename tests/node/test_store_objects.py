"""Shard store objects: round trips, ranges, id bounds, integrity, replace, dedupe, listing,
reads racing deletes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nuclux.errors import IntegrityError, ObjectNotFound, QuotaExceeded, StoreError, UsageError
from nuclux.node.store import ShardStore
from tests.node.test_store_support import blob_files, get, open_store, put, sha, tmp_files

MiB = 1 << 20


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[ShardStore]:
    s = await open_store(tmp_path / "store")
    await s.set_lease(1, 64 * MiB, 1000)
    await s.set_lease(2, 64 * MiB, 1000)
    yield s
    await s.close()


def root_of(tmp_path: Path) -> Path:
    return tmp_path / "store"


async def test_roundtrip_with_small_and_large_chunks(store: ShardStore) -> None:
    data = os.urandom(3 * MiB + 12345)
    for chunk in (1000, 1 << 16, MiB, 2 * MiB + 7):
        oid = f"obj-{chunk}".encode()
        info = await put(store, 1, oid, data, chunk=chunk)
        assert (info.size, info.sha256) == (len(data), sha(data))
        assert await get(store, 1, oid) == data
        st = await store.stat(1, oid)
        assert (st.size, st.sha256, st.sha256_hex) == (len(data), sha(data), sha(data).hex())
    parts = [c async for c in store.read(1, b"obj-1000", offset=10, length=MiB, chunk_size=300_000)]
    assert [len(p) for p in parts] == [300_000, 300_000, 300_000, MiB - 900_000]
    assert b"".join(parts) == data[10 : 10 + MiB]
    assert await store.read_range(1, b"obj-1000", 3 * MiB, 12345) == data[3 * MiB :]


async def test_empty_object_and_created_at(store: ShardStore) -> None:
    async with store.writer(1, b"empty", created_at=777) as w:
        info = await w.commit()
    assert (info.size, info.created_at) == (0, 777)
    assert await get(store, 1, b"empty") == b""
    assert await store.read_range(1, b"empty", 0, 0) == b""


async def test_range_validation(store: ShardStore) -> None:
    await put(store, 1, b"r", b"0123456789")
    assert await store.read_range(1, b"r", 10, 0) == b""
    assert [c async for c in store.read(1, b"r", offset=10)] == []
    bad: list[tuple[int, int | None]] = [(11, None), (-1, None), (0, 11), (5, 6), (0, -1)]
    for offset, length in bad:
        with pytest.raises(UsageError):
            _ = [c async for c in store.read(1, b"r", offset=offset, length=length)]
    with pytest.raises(UsageError, match="past the end"):
        await store.read_range(1, b"r", 8, 3)
    with pytest.raises(UsageError, match="at most"):
        await store.read_range(1, b"r", 0, 16 * MiB + 1)
    with pytest.raises(UsageError, match="chunk_size"):
        _ = [c async for c in store.read(1, b"r", chunk_size=0)]
    with pytest.raises(ObjectNotFound):
        await store.read_range(1, b"missing", 0, 1)
    with pytest.raises(ObjectNotFound):
        await store.stat(2, b"r")  # objects are per lease


async def test_object_id_bounds(store: ShardStore) -> None:
    await put(store, 1, b"x" * 64, b"ok")
    for bad in (b"", b"x" * 65):
        with pytest.raises(UsageError, match=r"1\.\.64 bytes"):
            store.writer(1, bad)
        with pytest.raises(UsageError):
            await store.stat(1, bad)
    with pytest.raises(UsageError, match="bytes"):
        store.writer(1, "text-id")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="lease id"):
        store.writer(-1, b"a")


async def test_size_and_hash_mismatch_leave_nothing(store: ShardStore, tmp_path: Path) -> None:
    data = b"abc" * 1000

    async def attempt(**kw: object) -> None:
        async with store.writer(1, b"bad", **kw) as w:  # type: ignore[arg-type]
            await w.write(data)
            await w.commit()

    with pytest.raises(IntegrityError, match="declared"):
        await attempt(size=len(data) + 1)
    with pytest.raises(IntegrityError, match="more than the declared"):
        await attempt(size=len(data) - 1)
    with pytest.raises(IntegrityError, match="hashes to"):
        await attempt(sha256=sha(b"other"))
    with pytest.raises(UsageError, match="32-byte"):
        store.writer(1, b"bad", sha256=b"short")
    with pytest.raises(ObjectNotFound):
        await store.stat(1, b"bad")
    assert tmp_files(root_of(tmp_path)) == []
    assert blob_files(root_of(tmp_path)) == set()
    assert (await store.lease_usage(1)).used_bytes == 0
    info = await put(store, 1, b"good", data)  # the writer's reservation was released
    assert info.sha256 == sha(data)


async def test_replace_is_atomic_and_accounts_the_difference(
    store: ShardStore, tmp_path: Path
) -> None:
    await store.set_lease(3, 10_000, None)
    old, new = b"o" * 8000, b"n" * 9000
    await put(store, 3, b"k", old)
    await put(store, 3, b"k", new)  # fits only because the old 8000 bytes are credited
    assert await get(store, 3, b"k") == new
    assert (await store.lease_usage(3)).used_bytes == 9000
    assert blob_files(root_of(tmp_path)) == {sha(new)}
    with pytest.raises(QuotaExceeded):
        await put(store, 3, b"k", b"m" * 10_001)
    assert await get(store, 3, b"k") == new  # a failed replace keeps the old object
    await put(store, 3, b"k", b"s" * 10)
    assert (await store.lease_usage(3)).used_bytes == 10


async def test_dedupe_and_refcount(store: ShardStore, tmp_path: Path) -> None:
    data = os.urandom(100_000)
    root = root_of(tmp_path)
    await put(store, 1, b"a", data)
    await put(store, 1, b"b", data)
    await put(store, 2, b"a", data)
    await put(store, 2, b"a", data)  # replace with identical content
    assert blob_files(root) == {sha(data)}
    assert (await store.capacity()).stored == len(data)
    assert (await store.capacity()).used == 3 * len(data)
    await store.delete(1, b"a")
    await store.delete(2, b"a")
    assert blob_files(root) == {sha(data)}
    assert await get(store, 1, b"b") == data
    await put(store, 1, b"b", b"different")
    assert blob_files(root) == {sha(b"different")}
    await store.delete(1, b"b")
    assert blob_files(root) == set()
    assert (await store.lease_usage(1)).used_bytes == 0
    with pytest.raises(ObjectNotFound):
        await store.delete(1, b"b")


async def test_read_survives_concurrent_delete_and_replace(store: ShardStore) -> None:
    data = os.urandom(4 * MiB)
    await put(store, 1, b"v", data)
    reader = store.read(1, b"v", chunk_size=MiB)
    first = await anext(reader)
    await store.delete(1, b"v")
    await put(store, 1, b"v", b"replacement")
    rest = [c async for c in reader]
    assert first + b"".join(rest) == data
    assert await get(store, 1, b"v") == b"replacement"
    await store.delete(1, b"v")
    with pytest.raises(ObjectNotFound):
        await get(store, 1, b"v")


async def test_open_read_gives_the_entry_and_its_bytes_from_one_lookup(
    store: ShardStore,
) -> None:
    data = os.urandom(3 * MiB + 5)
    await put(store, 1, b"o", data)
    async with store.open_read(1, b"o") as obj:
        assert (obj.info.size, obj.info.sha256) == (len(data), sha(data))
        await store.delete(1, b"o")  # the open blob keeps its bytes
        got = [c async for c in obj.chunks(MiB - 1, 2 * MiB, chunk_size=MiB)]
        assert [len(c) for c in got] == [MiB, MiB]
        assert b"".join(got) == data[MiB - 1 : 3 * MiB - 1]
        with pytest.raises(UsageError, match="past the end"):
            _ = [c async for c in obj.chunks(len(data) + 1)]
        with pytest.raises(UsageError, match="chunk_size"):
            _ = [c async for c in obj.chunks(chunk_size=0)]
    with pytest.raises(UsageError, match="closed"):
        _ = [c async for c in obj.chunks()]
    with pytest.raises(ObjectNotFound):
        async with store.open_read(1, b"o"):
            pass


async def test_list_objects_pages(store: ShardStore) -> None:
    ids = [b"k%03d" % i for i in range(25)]
    for oid in reversed(ids):
        await put(store, 2, oid, oid)
    seen: list[bytes] = []
    after: bytes | None = None
    while page := await store.list_objects(2, after=after, limit=10):
        seen += [o.object_id for o in page]
        after = page[-1].object_id
    assert seen == ids
    with pytest.raises(UsageError, match="limit"):
        await store.list_objects(2, limit=0)


async def test_closed_store_and_second_process_lock(tmp_path: Path) -> None:
    s = await open_store(tmp_path / "s")
    with pytest.raises(StoreError, match="in use"):
        await open_store(tmp_path / "s")
    await s.close()
    with pytest.raises(StoreError, match="closed"):
        await s.capacity()
    await s.close()  # idempotent
    async with await open_store(tmp_path / "s") as again:
        assert (await again.capacity()).leases == 0
