"""Keeping bulk data from filling the page cache: early writeback and dropping cold pages.

A streamed object is fsynced once, at commit. Without help the kernel leaves the whole object
dirty in the page cache until then, so the final fsync writes all of it while the writer
waits. ``start_writeback`` (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``, which does not
wait) after every gathered chunk overlaps the disk with the network, and the fsync has little
left to do. It is only a hint: durability still comes from the fsync.

``drop_cached`` lets the kernel forget a range's clean pages
(``posix_fadvise(POSIX_FADV_DONTNEED)``). A node's stored shares are cold data, read again
rarely, and a downloaded file is written once front to back; keeping every such byte cached
makes each write take pages the process has not used lately. On this kind of virtual machine
such a page costs a fault in the host: writing 1 MiB into new page-cache pages took 2.4-2.8 ms
of CPU, against 0.37 ms when each file's pages were dropped after its fsync and reused by the
next. A later read of dropped data comes from the disk (about 1 ms per MiB here).

``Dropper`` does both for a file written in pieces, in any order: each piece's writeback is
started at once, and once more than ``keep`` bytes have been written since, the piece is
waited for and dropped. The last ``keep`` bytes stay cached.

Where a call is unavailable (not Linux, no libc) it does nothing.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import ctypes.util
import os
import sys
import threading
from collections.abc import Callable

SYNC_FILE_RANGE_WAIT_BEFORE = 1
SYNC_FILE_RANGE_WRITE = 2
SYNC_FILE_RANGE_WAIT_AFTER = 4


def _load() -> Callable[[int, int, int, int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_SYNC_FILE_RANGE = _load()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start (not wait for) writing ``length`` bytes at ``offset`` of ``fd`` to disk."""
    if _SYNC_FILE_RANGE is not None and length > 0:
        _SYNC_FILE_RANGE(fd, offset, length, SYNC_FILE_RANGE_WRITE)  # a hint: errors ignored


def wait_written(fd: int, offset: int, length: int) -> None:
    """Write the range to disk and wait for it (not a durability barrier: no metadata)."""
    if _SYNC_FILE_RANGE is not None and length > 0:
        flags = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER
        _SYNC_FILE_RANGE(fd, offset, length, flags)


def drop_cached(fd: int, offset: int = 0, length: int = 0) -> None:
    """Let the kernel drop ``fd``'s cached pages in the range (``length`` 0: to the end);
    only clean pages go, so call it after an fsync, a ``wait_written`` or a read."""
    if hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):  # a hint: the data is on disk either way
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


class Dropper:
    """Writeback and dropping for pieces of one file written by several threads."""

    def __init__(self, fd: int, keep: int) -> None:
        self._fd, self._keep = fd, keep
        self._pieces: collections.deque[tuple[int, int]] = collections.deque()
        self._held = 0
        self._lock = threading.Lock()

    def written(self, offset: int, length: int) -> None:
        """Record a piece just written (call it from the writing thread, after the write)."""
        if length <= 0:
            return
        start_writeback(self._fd, offset, length)
        old: list[tuple[int, int]] = []
        with self._lock:
            self._pieces.append((offset, length))
            self._held += length
            while self._held > self._keep and self._pieces:
                piece = self._pieces.popleft()
                self._held -= piece[1]
                old.append(piece)
        for off, n in old:
            wait_written(self._fd, off, n)
            drop_cached(self._fd, off, n)
