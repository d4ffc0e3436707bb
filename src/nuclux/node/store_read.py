"""An object opened for reading: its index entry and its bytes, from one descriptor.

``ShardStore.open_read`` looks the object up and opens its blob in one database-thread step
(``Index.open_object``), so a reader that needs the object's size or digest before its bytes
(the node's GET sets Content-Length and the digest header first) pays one round trip, not
two. The descriptor survives a concurrent delete or replace (POSIX unlink): the bytes read are
the old object's in full, never a mix.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncGenerator
from concurrent.futures import Future

from nuclux.errors import UsageError
from nuclux.node.store_index import close_after, pread_cached, pread_exact
from nuclux.node.store_runtime import Workers, wait
from nuclux.node.store_types import (
    DEFAULT_CHUNK_SIZE,
    MAX_CHUNK_SIZE,
    MAX_READ_RANGE,
    ObjectInfo,
    check_range,
)


class OpenObject:
    """Use inside ``async with store.open_read(...)``; the blob closes when the block ends
    (after any read still running in a thread)."""

    def __init__(self, workers: Workers, info: ObjectInfo, fd: int) -> None:
        self.info = info
        self._w, self._fd = workers, fd
        self._pending: Future[bytes | bytearray] | None = None
        self._closed = False

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            close_after(self._fd, self._pending)

    async def chunks(
        self, offset: int = 0, length: int | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncGenerator[bytes | bytearray, None]:
        """``length`` bytes (default: to the end) from ``offset``, in chunks (each a fresh
        object the caller may keep). One chunk is read ahead: an uncached read runs in an I/O
        thread while the last chunk is being sent; a cached one is done at once, on this
        thread."""
        if (
            isinstance(chunk_size, bool)
            or not isinstance(chunk_size, int)
            or not 1 <= chunk_size <= MAX_CHUNK_SIZE
        ):
            raise UsageError(f"chunk_size must be 1..{MAX_CHUNK_SIZE}, got {chunk_size!r}")
        if self._closed:
            raise UsageError("the object was closed; open it again")
        fd, digest = self._fd, self.info.sha256
        pos = offset
        end = offset + check_range(self.info.size, offset, length)

        def next_read() -> Future[bytes | bytearray] | None:
            nonlocal pos
            if pos >= end:
                return None
            n = min(chunk_size, end - pos)
            cached = pread_cached(fd, n, pos)
            job: Future[bytes | bytearray]
            if cached is None:
                job = self._w.io_submit(functools.partial(pread_exact, fd, n, pos, digest))
            else:
                job = Future()
                job.set_result(cached)
            pos += n
            return job

        self._pending = next_read()
        while self._pending is not None:
            data = await wait(self._pending)
            self._pending = next_read()
            yield data

    async def read(self, offset: int = 0, length: int | None = None) -> bytes | bytearray:
        """``length`` bytes (default: to the end, at most ``MAX_READ_RANGE``) from ``offset``
        in one piece: from the page cache on this thread when all of it is there, else in an
        I/O thread."""
        if self._closed:
            raise UsageError("the object was closed; open it again")
        n = check_range(self.info.size, offset, length)
        if n > MAX_READ_RANGE:
            raise UsageError(f"a read in one piece is at most {MAX_READ_RANGE} bytes")
        cached = pread_cached(self._fd, n, offset) if n else bytearray()
        if cached is not None:
            return cached
        self._pending = self._w.io_submit(
            functools.partial(pread_exact, self._fd, n, offset, self.info.sha256)
        )
        return await wait(self._pending)
