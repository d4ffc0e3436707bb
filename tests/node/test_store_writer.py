"""Shard store writers: rollback on error, cancellation and close; quota while streaming;
size bounds; misuse."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nuclux.errors import ObjectNotFound, QuotaExceeded, StoreError, UsageError
from nuclux.node.store import ShardStore
from tests.node.test_store_support import get, open_store, put, tmp_files

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


async def test_rollback_on_exception_and_plain_exit(store: ShardStore, tmp_path: Path) -> None:
    async def buggy_upload() -> None:
        async with store.writer(1, b"boom") as w:
            await w.write(os.urandom(3 * MiB))
            raise RuntimeError("caller bug")

    with pytest.raises(RuntimeError):
        await buggy_upload()
    async with store.writer(1, b"abandoned") as w:
        await w.write(b"never committed")
    for oid in (b"boom", b"abandoned"):
        with pytest.raises(ObjectNotFound):
            await store.stat(1, oid)
    assert tmp_files(root_of(tmp_path)) == []
    await put(store, 1, b"full", b"z" * 64 * MiB, chunk=8 * MiB)  # no reservation leaked


async def test_rollback_on_cancellation(store: ShardStore, tmp_path: Path) -> None:
    started = asyncio.Event()

    async def slow_upload() -> None:
        async with store.writer(1, b"cancelled") as w:
            for _ in range(40):
                await w.write(b"q" * MiB)
            started.set()
            await asyncio.Event().wait()  # the peer stalls

    task = asyncio.create_task(slow_upload())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ObjectNotFound):
        await store.stat(1, b"cancelled")
    assert tmp_files(root_of(tmp_path)) == []
    await put(store, 1, b"after", b"y" * 64 * MiB, chunk=8 * MiB)


async def test_cancel_at_every_step_is_all_or_nothing(store: ShardStore, tmp_path: Path) -> None:
    data = os.urandom(2 * MiB)
    for delay in range(12):
        task = asyncio.create_task(put(store, 2, b"c%d" % delay, data, chunk=MiB // 2))
        for _ in range(delay):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    objs = await store.list_objects(2)
    for info in objs:
        assert await get(store, 2, info.object_id) == data
    usage = await store.lease_usage(2)
    assert usage.used_bytes == len(objs) * len(data)
    assert tmp_files(root_of(tmp_path)) == []
    await put(store, 2, b"fill", b"f" * (64 * MiB - usage.used_bytes), chunk=8 * MiB)


async def test_concurrent_writers_cannot_overshoot(store: ShardStore) -> None:
    await store.set_lease(4, 3 * MiB, None)
    async with store.writer(4, b"one") as w1, store.writer(4, b"two") as w2:
        await w1.write(b"1" * MiB)
        await w2.write(b"2" * MiB)
        await w1.write(b"1" * MiB)
        with pytest.raises(QuotaExceeded, match="being written"):
            await w2.write(b"2" * MiB)
        await w1.commit()
    assert (await store.lease_usage(4)).used_bytes == 2 * MiB
    with pytest.raises(QuotaExceeded):
        async with store.writer(4, b"three", size=MiB + 1):
            pass


async def test_max_object_size(tmp_path: Path) -> None:
    s = await open_store(tmp_path / "small", max_object_size=1000)
    try:
        await s.set_lease(1, 1 << 20, None)
        with pytest.raises(UsageError, match="maximum object size"):
            s.writer(1, b"a", size=1001)
        with pytest.raises(UsageError, match="maximum object size"):
            await put(s, 1, b"a", b"x" * 1001, chunk=600)
        await put(s, 1, b"a", b"x" * 1000)
    finally:
        await s.close()


async def test_writer_misuse(store: ShardStore) -> None:
    w = store.writer(1, b"m")
    with pytest.raises(UsageError, match="async with"):
        await w.write(b"x")
    async with w:
        await w.write(b"x")
        await w.commit()
        with pytest.raises(UsageError, match="committed"):
            await w.write(b"y")
        with pytest.raises(UsageError, match="committed"):
            await w.commit()
    with pytest.raises(UsageError, match="only once"):
        async with w:
            pass
    assert await get(store, 1, b"m") == b"x"
    async with store.writer(1, b"n") as w2:
        with pytest.raises(UsageError, match="takes bytes"):
            await w2.write("text")  # type: ignore[arg-type]
        with pytest.raises(UsageError, match="failed"):
            await w2.commit()


async def test_close_with_a_writer_open_rolls_it_back(tmp_path: Path) -> None:
    s = await open_store(tmp_path / "s")
    await s.set_lease(1, MiB, None)
    async with s.writer(1, b"w") as w:
        await w.write(b"d" * 1000)
        await s.close()  # e.g. SIGTERM: the daemon closes the store under a running upload
        with pytest.raises(StoreError, match="closed"):
            await w.commit()
    assert tmp_files(tmp_path / "s") == []
    async with await open_store(tmp_path / "s") as again:
        assert await again.list_objects(1) == []


async def test_unknown_and_closed_lease_refuse_writes(store: ShardStore) -> None:
    with pytest.raises(StoreError, match="no lease 9"):
        async with store.writer(9, b"a"):
            pass
    await store.close_lease(2, 500)
    with pytest.raises(StoreError, match="closed"):
        await put(store, 2, b"a", b"data")
    async with store.writer(1, b"late") as w:
        await w.write(b"data")
        await store.close_lease(1, 500)
        with pytest.raises(StoreError, match="closed"):
            await w.commit()
    with pytest.raises(ObjectNotFound):
        await store.stat(1, b"late")


async def test_a_block_written_against_its_root_is_checked_by_it(store: ShardStore) -> None:
    from nuclux.core.merkle import root_of_bytes
    from nuclux.core.reference import block_object_id
    from nuclux.errors import IntegrityError

    await store.set_lease(1, 1 << 20, None)
    oid, data = block_object_id(bytes(16), 0, 0), os.urandom(5000)
    with pytest.raises(UsageError, match="share block"):
        store.writer(1, b"plain", merkle_root=root_of_bytes(data))
    async with store.writer(1, oid, merkle_root=bytes(32)) as w:
        await w.write(data)
        with pytest.raises(IntegrityError, match="Merkle root"):
            await w.commit()
    with pytest.raises(ObjectNotFound):
        await store.stat(1, oid)
    async with store.writer(1, oid, merkle_root=root_of_bytes(data)) as w:
        await w.write(data)
        await w.commit()
    assert await get(store, 1, oid) == data
