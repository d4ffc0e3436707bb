"""Threads and in-memory lease accounting behind the shard store's async API.

``Workers`` owns two thread pools: one thread for SQLite and every file move that must be
serialised with the index, and a few threads for bulk file I/O (hashing, writing, fsync, pread)
so a large write never blocks the index. A database job can carry an ``apply`` callback that the
database thread hands to the event loop right after the job's transaction committed, before the
awaiting task resumes; so the in-memory view follows the index in commit order even when the
awaiting task was cancelled meanwhile.

``LeaseBook`` is that in-memory view: per lease its quota, committed used bytes (a mirror of the
index) and the bytes in-flight writers have reserved. Writers charge it per chunk with no SQLite
work; the commit transaction re-checks the quota against the index, which stays the authority.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from nuclux.errors import LeaseNotFound, QuotaExceeded, StoreError
from nuclux.node.store_index import LeaseRow

T = TypeVar("T")
U = TypeVar("U")

_CLOSED = "the shard store is closed"


async def wait(job: Future[T]) -> T:
    """Await a thread job; failures of the disk or SQLite become StoreError."""
    try:
        return await asyncio.wrap_future(job)
    except (OSError, sqlite3.Error) as exc:
        raise StoreError(f"shard store I/O failed: {exc}") from exc


class Workers:
    def __init__(self, loop: asyncio.AbstractEventLoop, io_threads: int) -> None:
        self.loop = loop
        self.closed = False
        self._db = ThreadPoolExecutor(1, thread_name_prefix="nuclux-store-db")
        self._io = ThreadPoolExecutor(io_threads, thread_name_prefix="nuclux-store-io")

    def db_submit(self, fn: Callable[[], T], apply: Callable[[T], None] | None = None) -> Future[T]:
        if self.closed:
            raise StoreError(_CLOSED)

        def job() -> T:
            result = fn()
            if apply is not None:
                with contextlib.suppress(RuntimeError):  # the loop is gone: nobody to tell
                    self.loop.call_soon_threadsafe(apply, result)
            return result

        return self._db.submit(job)

    async def db(self, fn: Callable[[], T], apply: Callable[[T], None] | None = None) -> T:
        return await wait(self.db_submit(fn, apply))

    def io_submit(self, fn: Callable[[], T]) -> Future[T]:
        if self.closed:
            raise StoreError(_CLOSED)
        return self._io.submit(fn)

    async def io(self, fn: Callable[[], T]) -> T:
        return await wait(self.io_submit(fn))

    def io_then_db(
        self, first: Callable[[], T], then: Callable[[T], U], apply: Callable[[U], None] | None
    ) -> Future[U]:
        """``first`` in an I/O thread, then ``then(its result)`` as a database job (with
        ``apply`` as in ``db_submit``), handed over thread to thread: the event loop wakes once,
        for the outcome, not between the two. A failure of ``first`` skips ``then``.

        The future is marked running, so cancelling it fails until the jobs have finished."""
        out: Future[U] = Future()
        out.set_running_or_notify_cancel()

        def settle(job: Future[U]) -> None:
            exc = job.exception()
            if exc is not None:
                out.set_exception(exc)
            else:
                out.set_result(job.result())

        def second(job: Future[T]) -> None:
            exc = job.exception()
            if exc is not None:
                out.set_exception(exc)
                return
            result = job.result()
            try:
                self.db_submit(lambda: then(result), apply).add_done_callback(settle)
            except BaseException as err:  # closed, or the pool shut down meanwhile
                out.set_exception(err)

        self.io_submit(first).add_done_callback(second)
        return out

    def io_pair(self, first: Callable[[], None], second: Callable[[], None]) -> Future[None]:
        """Run two jobs in parallel I/O threads; one future for both (first error wins).

        The future is marked running, so cancelling it fails until both jobs have finished:
        "done" means no thread still touches the writer's file."""
        out: Future[None] = Future()
        out.set_running_or_notify_cancel()
        jobs = [self.io_submit(first), self.io_submit(second)]

        left = [2]
        lock = threading.Lock()

        def done(_: object) -> None:
            with lock:  # the two jobs may finish at the same moment in two threads
                left[0] -= 1
                if left[0]:
                    return
            exc = next((e for j in jobs if (e := j.exception()) is not None), None)
            if exc is not None:
                out.set_exception(exc)
            else:
                out.set_result(None)

        for j in jobs:
            j.add_done_callback(done)
        return out

    def after(self, pending: Future[Any] | None, fn: Callable[[], None]) -> Future[None]:
        """Run ``fn`` in an I/O thread once ``pending`` (a job still using a file) is done.

        Used for cleanup, so it also runs when the store is closed (then in the caller)."""
        out: Future[None] = Future()
        out.set_running_or_notify_cancel()

        def run() -> None:
            try:
                fn()
            except BaseException as exc:
                out.set_exception(exc)
            else:
                out.set_result(None)

        def start(_: object = None) -> None:
            try:
                self._io.submit(run)
            except RuntimeError:  # pool shut down
                run()

        if pending is None or pending.done():
            start()
        else:
            pending.add_done_callback(start)
        return out

    async def close(self, final: Callable[[], None]) -> None:
        """Refuse new work, run ``final`` on the database thread after queued jobs, join."""
        if self.closed:
            return
        self.closed = True
        try:
            await asyncio.wrap_future(self._db.submit(final))
        finally:
            await asyncio.to_thread(self._db.shutdown, True)
            await asyncio.to_thread(self._io.shutdown, True)


@dataclass(slots=True)
class LeaseState:
    quota: int
    used: int
    closed: bool
    inflight: int = 0


class LeaseBook:
    """Quota, committed usage and in-flight reservations per lease (event-loop thread only)."""

    def __init__(self, rows: Iterable[LeaseRow]) -> None:
        self._leases: dict[int, LeaseState] = {}
        self._claims: dict[tuple[int, bytes], object] = {}
        for row in rows:
            self.put(row)

    def put(self, row: LeaseRow) -> None:
        cur = self._leases.get(row.lease_id)
        inflight = cur.inflight if cur else 0
        state = LeaseState(row.quota_bytes, row.used_bytes, row.closed_at is not None, inflight)
        self._leases[row.lease_id] = state

    def set_used(self, lease_id: int, used: int) -> None:
        if (state := self._leases.get(lease_id)) is not None:
            state.used = used

    def drop(self, lease_ids: Iterable[int]) -> None:
        for lease_id in lease_ids:
            self._leases.pop(lease_id, None)

    def quota(self, lease_id: int) -> int | None:
        """The lease's reserved bytes, or None if the store has no such lease."""
        state = self._leases.get(lease_id)
        return None if state is None else state.quota

    def writable(self, lease_id: int) -> LeaseState:
        state = self._leases.get(lease_id)
        if state is None:
            raise LeaseNotFound(
                f"no lease {lease_id} in this store; reserve it with set_lease first"
            )
        if state.closed:
            raise StoreError(f"lease {lease_id} is closed; it accepts no new data")
        return state

    def check_fits(self, lease_id: int, need: int) -> None:
        state = self.writable(lease_id)
        free = state.quota - state.used - state.inflight
        if need > free:
            raise QuotaExceeded(
                f"lease {lease_id} has {max(0, free)} of its {state.quota} reserved bytes free "
                f"({state.used} stored, {state.inflight} being written); this write needs {need}"
            )

    def reserve(self, lease_id: int, delta: int) -> None:
        """Count ``delta`` more in-flight bytes against the lease, or raise QuotaExceeded."""
        if delta <= 0:
            return
        self.check_fits(lease_id, delta)
        self._leases[lease_id].inflight += delta

    def release(self, lease_id: int, amount: int) -> None:
        if amount and (state := self._leases.get(lease_id)) is not None:
            state.inflight = max(0, state.inflight - amount)

    def claim(self, key: tuple[int, bytes], owner: object) -> bool:
        """Claim the credit of an object being replaced; only one writer at a time gets it."""
        return self._claims.setdefault(key, owner) is owner

    def unclaim(self, key: tuple[int, bytes], owner: object) -> None:
        if self._claims.get(key) is owner:
            del self._claims[key]
