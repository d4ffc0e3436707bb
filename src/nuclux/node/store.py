"""The provider's shard store: crash-safe, content-addressed, lease-scoped object storage.

Theory of operation
-------------------
Layout under ``root``: ``blobs/ab/<digest hex>`` holds each distinct content once (files are
immutable once published; the digest is the SHA-256, or a share block's Merkle root when the
block was written against its root, as block PUTs are), ``tmp/`` holds writes in progress,
``quarantine/`` holds blobs the self-check found damaged, and ``index.sqlite3`` (WAL,
``synchronous=FULL``) maps ``(lease, object id)`` to a content digest and counts references per
blob. ``LOCK`` keeps a second process out.

A write streams into ``tmp/``, is hashed on the way, fsynced, then published by one index
transaction on the single database thread: rename into ``blobs/`` (unless the content exists),
fsync the directory, insert/replace the object row, adjust refcounts and used bytes, COMMIT.
Files are only ever unlinked after the transaction that dropped their last reference has
committed. So at any crash point the index refers only to complete, fsynced blobs, and the only
debris is unreferenced files, which the self-check at ``open`` removes (``store_check``).

Readers look the object up and open its blob in one database-thread step; an open descriptor
survives a concurrent delete or replace (POSIX unlink), so a read returns the old bytes in full
or raises ObjectNotFound, never a mix. Time is always an argument (chain time), never read here.

Share blocks (ids ``f/<fid>/s/<i>/<j>``) are objects like any other, but the writer also
computes their Merkle roots, and the index keeps each lease's latest co-signed revision with
its share list (``store_revisions``); blocks of a share that revision lists cannot be replaced
or deleted (``ShareInRevision``) until a later revision removes the share.

Modules: ``store_types`` (values, limits), ``store_index`` / ``store_txn`` (SQLite and blob
files), ``store_revisions`` (shares and revisions), ``store_check`` (self-check),
``store_runtime`` (threads, in-memory quota book), ``store_writer`` (streaming writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType

from nuclux.core.reference import parse_block_id
from nuclux.errors import UsageError
from nuclux.node import store_revisions as revs
from nuclux.node import store_txn as txn
from nuclux.node.shares import (
    RevisionPlan,
    RevisionRequest,
    ShareKey,
    ShareSummary,
    StoredRevision,
)
from nuclux.node.store_batch import remove_temp_files, write_temp_files
from nuclux.node.store_check import self_check
from nuclux.node.store_index import Index, LeaseRow, close_after, pread_exact
from nuclux.node.store_read import OpenObject
from nuclux.node.store_runtime import LeaseBook, Workers, wait
from nuclux.node.store_types import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_OBJECT_SIZE,
    MAX_LIST_LIMIT,
    MAX_READ_RANGE,
    CapacityReport,
    CheckReport,
    DroppedObject,
    GcReport,
    LeaseUsage,
    ObjectInfo,
    check_count,
    check_lease_id,
    check_object_id,
    check_optional_count,
    check_range,
)
from nuclux.node.store_writer import ObjectWriter

FROZEN_CACHE_LEASES = 64
"""Leases whose frozen-share sets ``check_writable`` keeps in memory (least recently used
are dropped; a dropped lease costs one index query on its next block)."""

__all__ = [
    "CapacityReport",
    "CheckReport",
    "DroppedObject",
    "GcReport",
    "LeaseUsage",
    "ObjectInfo",
    "ObjectWriter",
    "OpenObject",
    "ShardStore",
]


class ShardStore:
    """Open with ``await ShardStore.open(...)``; one instance per root directory."""

    def __init__(
        self,
        ix: Index,
        workers: Workers,
        rows: list[LeaseRow],
        report: CheckReport,
        *,
        capacity_bytes: int,
        grace_seconds: int,
        max_object_size: int,
    ) -> None:
        self._ix, self._w, self._book = ix, workers, LeaseBook(rows)
        # per lease, the shares its latest revision lists, as the index last said (in commit
        # order: updated by the database thread's apply callbacks)
        self._frozen: OrderedDict[int, frozenset[ShareKey]] = OrderedDict()
        self.check_report = report
        self.capacity_bytes = capacity_bytes
        self.grace_seconds = grace_seconds
        self.max_object_size = max_object_size

    @classmethod
    async def open(
        cls,
        root: Path,
        capacity_bytes: int,
        *,
        grace_seconds: int,
        max_object_size: int = DEFAULT_MAX_OBJECT_SIZE,
        verify_content: bool = True,
        io_threads: int = 4,
    ) -> ShardStore:
        """Open (creating if needed) the store at ``root`` and run the self-check.

        ``verify_content`` re-hashes every blob (about 1.8 GB/s); the report of what the check
        found is ``store.check_report``."""
        check_count("capacity_bytes", capacity_bytes)
        check_count("grace_seconds", grace_seconds)
        check_count("max_object_size", max_object_size)
        if not 1 <= io_threads <= 64:
            raise UsageError(f"io_threads must be 1..64, got {io_threads}")
        workers = Workers(asyncio.get_running_loop(), io_threads)
        root = Path(root)

        def start() -> tuple[Index, CheckReport, list[LeaseRow]]:
            ix = Index.open(root)
            try:
                return ix, self_check(ix, verify_content=verify_content), ix.leases()
            except BaseException:
                ix.close()
                raise

        try:
            ix, report, rows = await workers.db(start)
        except BaseException:
            await workers.close(lambda: None)
            raise
        return cls(
            ix,
            workers,
            rows,
            report,
            capacity_bytes=capacity_bytes,
            grace_seconds=grace_seconds,
            max_object_size=max_object_size,
        )

    async def close(self) -> None:
        """Finish queued index work and release the store; later calls raise StoreError."""
        await self._w.close(self._ix.close)

    async def __aenter__(self) -> ShardStore:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # leases and capacity ------------------------------------------------------------------

    async def set_lease(self, lease_id: int, quota_bytes: int, expires_at: int | None) -> None:
        """Create a lease's reservation or change its quota and expiry (chain time)."""
        lid = check_lease_id(lease_id)
        quota = check_count("quota_bytes", quota_bytes)
        exp = check_optional_count("expires_at", expires_at)
        cap = self.capacity_bytes
        await self._w.db(lambda: txn.set_lease(self._ix, lid, quota, exp, cap), self._book.put)

    async def ensure_lease(self, lease_id: int, quota_bytes: int) -> None:
        """Reserve ``quota_bytes`` for a lease unless that is already its quota. The check
        reads the in-memory book, so the common case costs no database round trip."""
        if self._book.quota(check_lease_id(lease_id)) != quota_bytes:
            await self.set_lease(lease_id, quota_bytes, None)

    async def close_lease(self, lease_id: int, closed_at: int) -> None:
        """Mark a lease closed at chain time ``closed_at``; gc removes it after the grace."""
        lid = check_lease_id(lease_id)
        at = check_count("closed_at", closed_at)
        await self._w.db(lambda: txn.close_lease(self._ix, lid, at), self._book.put)

    async def lease_usage(self, lease_id: int) -> LeaseUsage:
        lid = check_lease_id(lease_id)

        def read() -> LeaseUsage:
            r = self._ix.lease(lid)
            n = self._ix.object_count(lid)
            return LeaseUsage(lid, r.quota_bytes, r.used_bytes, n, r.expires_at, r.closed_at)

        return await self._w.db(read)

    async def capacity(self) -> CapacityReport:
        def read() -> CapacityReport:
            used, stored, leases = self._ix.totals()
            reserved = self._ix.reserved_bytes()
            return CapacityReport(self.capacity_bytes, reserved, used, stored, leases)

        return await self._w.db(read)

    @property
    def root(self) -> Path:
        """The store's directory."""
        return self._ix.root

    # objects ------------------------------------------------------------------------------

    def writer(
        self,
        lease_id: int,
        object_id: bytes,
        *,
        size: int | None = None,
        sha256: bytes | None = None,
        merkle_root: bytes | None = None,
        created_at: int = 0,
    ) -> ObjectWriter:
        """A streaming writer for ``(lease_id, object_id)``; use it with ``async with``.
        ``sha256`` or, for a share block, ``merkle_root`` is the content it must have."""
        return ObjectWriter(
            self._ix,
            self._w,
            self._book,
            lease_id,
            object_id,
            size=size,
            sha256=sha256,
            merkle_root=merkle_root,
            created_at=created_at,
            max_size=self.max_object_size,
        )

    async def put_many(
        self, lease_id: int, items: Sequence[tuple[bytes, bytes | memoryview]], *, created_at: int
    ) -> list[ObjectInfo]:
        """Store several small objects of one lease at once (``store_batch``): all become
        visible in one index transaction, or none does."""
        lid = check_lease_id(lease_id)
        for oid, data in items:
            check_object_id(oid)
            if len(data) > self.max_object_size:
                raise UsageError(
                    f"size {len(data)} exceeds the maximum object size {self.max_object_size}"
                )
        total = sum(len(data) for _, data in items)
        self._book.reserve(lid, total)  # QuotaExceeded before anything is written
        try:
            files = await self._w.io(lambda: write_temp_files(self._ix, items))
            try:
                infos, _ = await self._w.db(
                    lambda: txn.commit_objects(self._ix, lid, files, created_at),
                    lambda result: self._book.set_used(lid, result[1]),
                )
            except BaseException:
                remove_temp_files(files)  # none was consumed: the transaction rolled back
                raise
        finally:
            self._book.release(lid, total)
        return infos

    async def stat(self, lease_id: int, object_id: bytes) -> ObjectInfo:
        lid, oid = check_lease_id(lease_id), check_object_id(object_id)
        return await self._w.db(lambda: self._ix.stat(lid, oid))

    async def _open(self, lease_id: int, object_id: bytes) -> tuple[ObjectInfo, int]:
        lid, oid = check_lease_id(lease_id), check_object_id(object_id)
        job = self._w.db_submit(lambda: self._ix.open_object(lid, oid))
        try:
            return await wait(job)
        except asyncio.CancelledError:  # the lookup may still open the file: close it then
            job.add_done_callback(
                lambda f: None if f.cancelled() or f.exception() else os.close(f.result()[1])
            )
            raise

    @contextlib.asynccontextmanager
    async def open_read(self, lease_id: int, object_id: bytes) -> AsyncIterator[OpenObject]:
        """The object's entry and its bytes (``OpenObject``), looked up and opened in one
        index round trip; closed when the block ends."""
        info, fd = await self._open(lease_id, object_id)
        obj = OpenObject(self._w, info, fd)
        try:
            yield obj
        finally:
            obj.close()

    async def read(
        self,
        lease_id: int,
        object_id: bytes,
        offset: int = 0,
        length: int | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> AsyncIterator[bytes | bytearray]:
        """Stream ``length`` bytes (default: to the end) from ``offset`` in chunks (each a fresh
        object the caller may keep).

        The blob stays open until the iteration ends; when stopping early, wrap the call in
        ``contextlib.aclosing`` to release it at once rather than at garbage collection."""
        async with self.open_read(lease_id, object_id) as obj:
            async for data in obj.chunks(offset, length, chunk_size):
                yield data

    async def read_range(self, lease_id: int, object_id: bytes, offset: int, length: int) -> bytes:
        """Read up to 16 MiB at once (proof leaves, small ranges)."""
        if isinstance(length, int) and length > MAX_READ_RANGE:
            raise UsageError(f"read_range reads at most {MAX_READ_RANGE} bytes; use read()")
        info, fd = await self._open(lease_id, object_id)
        pending: Future[bytes] | None = None
        try:
            n = check_range(info.size, offset, length)
            pending = self._w.io_submit(lambda: pread_exact(fd, n, offset, info.sha256))
            return await wait(pending)
        finally:
            close_after(fd, pending)

    async def list_objects(
        self, lease_id: int, *, after: bytes | None = None, limit: int = 1000
    ) -> list[ObjectInfo]:
        """Objects of a lease in object-id order, starting after ``after``."""
        lid = check_lease_id(lease_id)
        if after is not None:
            check_object_id(after)
        if (
            isinstance(limit, bool)
            or not isinstance(limit, int)
            or not 1 <= limit <= MAX_LIST_LIMIT
        ):
            raise UsageError(f"limit must be 1..{MAX_LIST_LIMIT}, got {limit!r}")
        return await self._w.db(lambda: self._ix.list_objects(lid, after, limit))

    async def check_writable(self, lease_id: int, object_id: bytes) -> None:
        """``ShareInRevision`` if ``object_id`` is a block of a share the lease's latest
        revision lists (a fast refusal before an upload; the commit checks again).

        Answered from memory for a block of a share that is not frozen (the usual case: a
        new share), so a block's PUT costs no index round trip before its body; the set may
        lag a revision committed a moment ago, which the commit's own check catches. A share
        the set lists is checked against the index, the authority."""
        lid, oid = check_lease_id(lease_id), check_object_id(object_id)
        block = parse_block_id(oid)
        if block is None:
            return
        frozen = self._frozen.get(lid)
        if frozen is None:
            frozen = await self._w.db(
                lambda: revs.frozen_shares(self._ix, lid), lambda f: self._remember(lid, f)
            )
        else:
            self._frozen.move_to_end(lid)
        if (block[0], block[1]) in frozen:
            await self._w.db(lambda: txn.check_not_in_revision(self._ix, lid, oid))

    def _remember(self, lease_id: int, frozen: frozenset[ShareKey]) -> None:
        self._frozen[lease_id] = frozen
        self._frozen.move_to_end(lease_id)
        while len(self._frozen) > FROZEN_CACHE_LEASES:
            self._frozen.popitem(last=False)

    async def delete(self, lease_id: int, object_id: bytes) -> None:
        """Delete an object and free its bytes in the lease's quota (``ShareInRevision`` for
        a block of a share in the latest revision)."""
        lid, oid = check_lease_id(lease_id), check_object_id(object_id)
        await self._w.db(
            lambda: txn.delete_object(self._ix, lid, oid)[0],
            lambda used: self._book.set_used(lid, used),
        )

    # shares and revisions --------------------------------------------------------------

    async def share(self, lease_id: int, file_id: bytes, index: int) -> ShareSummary | None:
        """Share ``index`` of file ``file_id`` as stored under the lease: None when it has no
        block, ``MalformedShare`` when its blocks are not a well-formed share."""
        lid = check_lease_id(lease_id)
        return await self._w.db(lambda: revs.share_summary(self._ix, lid, file_id, index))

    async def latest_revision(self, lease_id: int) -> StoredRevision | None:
        """The lease's latest co-signed revision and its shares (None before the first)."""
        lid = check_lease_id(lease_id)
        return await self._w.db(lambda: revs.latest_revision(self._ix, lid))

    async def plan_revision(self, lease_id: int, req: RevisionRequest) -> RevisionPlan:
        """What the node would co-sign for ``req`` (see ``store_revisions.plan_revision``)."""
        lid = check_lease_id(lease_id)
        return await self._w.db(lambda: revs.plan_revision(self._ix, lid, req))

    async def commit_revision(
        self,
        lease_id: int,
        req: RevisionRequest,
        plan: RevisionPlan,
        provider_sig: bytes,
        signed_at: int,
    ) -> None:
        """Store a co-signed revision durably and delete the blocks of the shares it
        removes (one transaction)."""
        lid, at = check_lease_id(lease_id), check_count("signed_at", signed_at)
        frozen = frozenset(e.key for e in plan.entries)

        def applied(used: int) -> None:
            self._book.set_used(lid, used)
            self._remember(lid, frozen)

        await self._w.db(
            lambda: revs.commit_revision(self._ix, lid, req, plan, provider_sig, at), applied
        )

    async def gc(self, now: int) -> GcReport:
        """Remove leases whose end (closed_at, else expires_at) + grace <= ``now``."""
        t = check_count("now", now)

        def applied(result: tuple[GcReport, list[int]]) -> None:
            self._book.drop(result[1])
            for lid in result[1]:
                self._frozen.pop(lid, None)

        report, _ = await self._w.db(lambda: txn.gc(self._ix, t, self.grace_seconds), applied)
        return report
