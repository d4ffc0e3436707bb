"""The shard store's worker threads: an I/O job handed straight to the database thread."""

from __future__ import annotations

import asyncio
import threading

import pytest

from nuclux.errors import StoreError
from nuclux.node.store_runtime import Workers, wait


async def test_io_then_db_runs_both_in_their_threads_and_applies_before_resuming() -> None:
    workers = Workers(asyncio.get_running_loop(), 2)
    seen: list[str] = []
    applied: list[int] = []

    def first() -> int:
        seen.append(threading.current_thread().name)
        return 20

    def then(x: int) -> int:
        seen.append(threading.current_thread().name)
        return x + 1

    try:
        assert await wait(workers.io_then_db(first, then, applied.append)) == 21
        assert applied == [21]  # the apply callback ran on the loop before the await resumed
        assert seen[0].startswith("nuclux-store-io")
        assert seen[1].startswith("nuclux-store-db")
    finally:
        await workers.close(lambda: None)


async def test_io_then_db_skips_the_database_job_when_the_first_fails() -> None:
    workers = Workers(asyncio.get_running_loop(), 2)
    called: list[object] = []

    def first() -> int:
        raise OSError(5, "disk gone")

    try:
        with pytest.raises(StoreError, match="disk gone"):
            await wait(workers.io_then_db(first, called.append, called.append))
        assert called == []

        def boom(x: int) -> int:
            raise ValueError(f"bad {x}")

        with pytest.raises(ValueError, match="bad 3"):
            await wait(workers.io_then_db(lambda: 3, boom, called.append))
        assert called == []
    finally:
        await workers.close(lambda: None)


async def test_io_then_db_fails_cleanly_once_the_store_closes_between_the_jobs() -> None:
    workers = Workers(asyncio.get_running_loop(), 2)
    gate = threading.Event()

    def first() -> int:
        gate.wait(5)
        return 1

    job = workers.io_then_db(first, lambda x: x, None)
    workers.closed = True  # as close() does first
    gate.set()
    with pytest.raises(StoreError, match="closed"):
        await wait(job)
    workers.closed = False
    await workers.close(lambda: None)
