"""Streaming object writes into the shard store: ``async with store.writer(...) as w``.

A writer streams into its own file in ``tmp/`` (created on the first chunk), hashing as it
goes. Incoming chunks are gathered (by reference, not copied) until ``WRITE_BUFFER_SIZE``, so
thread hand-offs happen per 4 MiB; a batch is hashed and written (one ``writev``) by two threads
side by side (both release the GIL), and that overlaps the arrival of the next batch (a pipeline
of depth one). After each batch the kernel is asked to start writing it to disk
(``pagecache.start_writeback``), so the commit's fsync finds little left to do.

Every chunk is charged to the lease's in-memory quota before it is accepted. The charge is the
bytes written minus the size of the object being replaced; that credit is looked up only when
the lease runs full, and only one concurrent writer of the same id can hold it. So concurrent
writers cannot together overshoot the quota.

A share block (an id ``f/<fid>/s/<i>/<j>``, ``storage-protocol.md`` section 2) is also fed to a
``MerkleBuilder`` in the same hashing step, off the event loop, and its root is committed with
the object. Every other object skips that (a plain object pays for SHA-256 only). A block
written against its expected Merkle root (``merkle_root=``, what a block PUT signs) skips the
SHA-256 instead: its root is its content digest, the name of its blob, so it is hashed once.

``commit()`` checks the declared size and hash, fsyncs and closes the file, then hands it to the
index transaction, which renames it into ``blobs/`` (or drops it if that content is stored
already). Leaving the ``async with`` without a successful commit rolls back: reservations are
released, and once any I/O still running in a thread has finished, the temp file is closed and
removed. Nothing a writer does is visible to readers before the index transaction commits.

A writer belongs to one task. Cancelling ``commit()`` while the index transaction is running
cannot undo it: afterwards the object is either fully there or not there at all.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import tempfile
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any

from nuclux.core.merkle import Buffer, MerkleBuilder
from nuclux.core.reference import parse_block_id
from nuclux.errors import IntegrityError, QuotaExceeded, StoreError, UsageError
from nuclux.node.store_index import Index, oid_text
from nuclux.node.store_runtime import LeaseBook, Workers, wait
from nuclux.node.store_txn import commit_object
from nuclux.node.store_types import (
    WRITE_BUFFER_SIZE,
    ObjectInfo,
    check_count,
    check_lease_id,
    check_object_id,
    check_optional_count,
    check_sha256,
)
from nuclux.pagecache import drop_cached, start_writeback

log = logging.getLogger("nuclux.node.store")

_IOV_MAX = 1024  # the POSIX minimum for IOV_MAX; Linux allows exactly this many
_NEW, _OPEN, _COMMITTING, _COMMITTED, _FAILED, _ABORTED = range(6)
_NOT_OPEN = {
    _NEW: "use the writer inside `async with store.writer(...) as w`",
    _COMMITTING: "the writer is committing",
    _COMMITTED: "the object was committed already",
    _FAILED: "an earlier call on this writer failed and its data was discarded; start a new one",
    _ABORTED: "the writer was rolled back",
}


def _write_all(fd: int, chunks: list[Buffer]) -> int:
    """Write ``chunks`` in order with ``writev`` (at most ``IOV_MAX`` pieces a call, resuming
    after short writes); returns the number of bytes written."""
    total = 0
    for i in range(0, len(chunks), _IOV_MAX):
        group = chunks[i : i + _IOV_MAX]
        size = sum(map(len, group))
        done = os.writev(fd, group)
        if done < size:  # short write: finish the group piece by piece
            rest = memoryview(b"".join(group))[done:]
            while rest:
                rest = rest[os.write(fd, rest) :]
        total += size
    return total


class ObjectWriter:
    """One streamed object write; create it with ``ShardStore.writer``."""

    def __init__(
        self,
        ix: Index,
        workers: Workers,
        book: LeaseBook,
        lease_id: int,
        object_id: bytes,
        *,
        size: int | None,
        sha256: bytes | None,
        created_at: int,
        max_size: int,
        merkle_root: bytes | None = None,
    ) -> None:
        self._lease_id = check_lease_id(lease_id)
        self._object_id = check_object_id(object_id)
        self._size = check_optional_count("size", size)
        self._sha256 = check_sha256(sha256)
        self._root = check_sha256(merkle_root)
        self._created_at = check_count("created_at", created_at)
        if self._size is not None and self._size > max_size:
            raise UsageError(f"size {self._size} exceeds the maximum object size {max_size}")
        block = parse_block_id(self._object_id) is not None
        if self._root is not None and (not block or self._sha256 is not None):
            raise UsageError("merkle_root= is the digest of a share block, instead of sha256=")
        self._ix, self._w, self._book, self._max_size = ix, workers, book, max_size
        self._state = _NEW
        self._fd: int | None = None
        self._tmp: Path | None = None
        self._hash = None if self._root is not None else hashlib.sha256()
        self._merkle = MerkleBuilder() if block else None
        self._batch: list[Buffer] = []
        self._batch_bytes = self._file_bytes = 0
        self._written = self._credit = self._charged = 0
        self._credit_known = False
        self._pending: Future[Any] | None = None

    @property
    def written(self) -> int:
        """Bytes accepted so far."""
        return self._written

    async def __aenter__(self) -> ObjectWriter:
        if self._state != _NEW:
            raise UsageError("a writer can be entered only once")
        self._state = _OPEN
        try:
            self._book.writable(self._lease_id)
            if self._size is not None:  # reserve the declared size at once: the chunks need
                size = self._size  # no accounting of their own
                await self._with_credit(lambda: self._charge(size))
        except BaseException:
            await self._abort()
            raise
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._state != _COMMITTED:
            await self._abort()

    async def write(self, data: bytes | bytearray | memoryview, *, borrowed: bool = False) -> None:
        """Accept the next chunk; raises QuotaExceeded as soon as it would not fit.

        A chunk that is not ``bytes`` is copied, unless ``borrowed``: then the caller keeps
        its memory unchanged until the writer is done (committed or rolled back), and the
        writer uses it in place (a block stream's receive buffer)."""
        if self._state != _OPEN:
            raise UsageError(_NOT_OPEN[self._state])
        try:
            if not isinstance(data, bytes | bytearray | memoryview):
                raise UsageError(f"write() takes bytes, got {type(data).__name__}")
            n = memoryview(data).nbytes
            total = self._written + n
            if total > self._max_size:
                raise UsageError(f"object exceeds the maximum object size of {self._max_size}")
            if self._size is not None and total > self._size:
                raise IntegrityError(f"received more than the declared size of {self._size} bytes")
            if total > self._charged + self._credit:  # past what is reserved already
                await self._with_credit(lambda: self._charge(total))
            self._written = total
            if borrowed:
                self._batch.append(memoryview(data).cast("B"))
            else:  # bytes are immutable: keep a reference; anything else may change, copy it
                self._batch.append(data if isinstance(data, bytes) else bytes(data))
            self._batch_bytes += n
            if self._batch_bytes < WRITE_BUFFER_SIZE:
                return
            batch, self._batch, self._batch_bytes = self._batch, [], 0
            await self._wait()
            # hashing and writing both release the GIL: run them side by side
            self._pending = self._w.io_pair(
                lambda: self._hash_all(batch), lambda: self._write_sync(batch, hash_it=False)
            )
        except BaseException:
            self._state = _FAILED
            raise

    async def commit(self) -> ObjectInfo:
        """Verify, make durable and publish the object; returns what was stored."""
        if self._state != _OPEN:
            raise UsageError(_NOT_OPEN[self._state])
        self._state = _COMMITTING
        try:
            if self._size is not None and self._written != self._size:
                raise IntegrityError(
                    f"object {oid_text(self._object_id)}: declared {self._size} bytes, "
                    f"received {self._written}"
                )
            await self._wait()
            tail, self._batch, self._batch_bytes = self._batch, [], 0
            lid, oid, size, at = self._lease_id, self._object_id, self._written, self._created_at

            def publish(hashed: tuple[bytes, bytes | None]) -> tuple[ObjectInfo, int]:
                tmp = self._tmp
                if tmp is None:
                    raise StoreError("writer has no temp file")  # unreachable by construction
                digest, root = hashed
                return commit_object(self._ix, lid, oid, digest, size, at, tmp, root)

            # check, fsync, then publish on the database thread, handed over directly
            self._pending = self._w.io_then_db(
                lambda: self._finish_sync(tail), publish, self._applied
            )
            info: ObjectInfo = (await self._wait())[0]
        except BaseException:
            self._state = _FAILED
            raise
        self._state = _COMMITTED
        return info

    # internals ----------------------------------------------------------------------------

    async def _wait(self) -> Any:
        return None if self._pending is None else await wait(self._pending)

    async def _with_credit(self, check: Callable[[], None]) -> None:
        """Run a quota check; if it fails and a replaced object's size was not yet credited,
        look that size up once (only then: it costs an index round trip) and check again."""
        try:
            check()
        except QuotaExceeded:
            if self._credit_known:
                raise
            self._credit_known = True
            lid, oid = self._lease_id, self._object_id
            old = await self._w.db(lambda: self._ix.object_size(lid, oid))
            if old is not None and self._book.claim((lid, oid), self):
                self._credit = old
            check()

    def _charge(self, total: int) -> None:
        charge = max(0, total - self._credit)
        delta = charge - self._charged
        if delta < 0:  # a credit found since the last chunk: hand back what it covers
            self._book.release(self._lease_id, -delta)
        else:
            self._book.reserve(self._lease_id, delta)
        self._charged = charge

    def _release(self) -> None:
        self._book.release(self._lease_id, self._charged)
        self._charged = 0
        self._book.unclaim((self._lease_id, self._object_id), self)

    def _applied(self, result: tuple[ObjectInfo, int]) -> None:
        self._book.set_used(self._lease_id, result[1])
        self._release()

    def _hash_all(self, batch: list[Buffer]) -> None:
        if self._hash is not None:
            for chunk in batch:
                self._hash.update(chunk)
        if self._merkle is not None:
            for chunk in batch:
                self._merkle.update(chunk)

    def _write_sync(self, batch: list[Buffer], *, hash_it: bool = True) -> None:
        if self._tmp is None:  # created on first use: one thread hand-off fewer per object
            fd, name = tempfile.mkstemp(dir=self._ix.root / "tmp", prefix="w-")
            self._fd, self._tmp = fd, Path(name)
        if self._fd is None:
            raise StoreError("writer file is closed")
        if hash_it:
            self._hash_all(batch)
        n = _write_all(self._fd, batch)
        start_writeback(self._fd, self._file_bytes, n)
        self._file_bytes += n

    def _finish_sync(self, tail: list[Buffer]) -> tuple[bytes, bytes | None]:
        """Write the tail, check the digest, fsync and close; (content digest, Merkle root or
        None). The digest is the SHA-256, or the Merkle root of a block written against one."""
        self._write_sync(tail)
        root = None if self._merkle is None else self._merkle.root()
        if self._hash is None:  # a block written against its root: that is its digest
            digest = root if root is not None else b""
            expected, what = self._root, "Merkle root"
        else:
            digest = self._hash.digest()
            expected, what = self._sha256, "SHA-256"
        if expected is not None and not hmac.compare_digest(digest, expected):
            raise IntegrityError(
                f"object {oid_text(self._object_id)}: content hashes to {digest.hex()} ({what}), "
                f"expected {expected.hex()}"
            )
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.fsync(fd)
                drop_cached(fd)
            finally:
                os.close(fd)
        return digest, root

    def _cleanup_sync(self) -> None:
        fd, self._fd = self._fd, None
        try:
            if fd is not None:
                os.close(fd)
            if self._tmp is not None:
                self._tmp.unlink(missing_ok=True)
        except OSError as exc:  # the next open's self-check clears tmp/ anyway
            log.warning("could not remove temp file %s: %s", self._tmp, exc)

    async def _abort(self) -> None:
        if self._state in (_COMMITTED, _ABORTED):
            return
        self._state = _ABORTED
        self._release()
        done = self._w.after(self._pending, self._cleanup_sync)
        self._pending = None
        await asyncio.shield(asyncio.wrap_future(done))
