"""Early writeback: ask the kernel to start writing a file range to disk now.

A streamed object is fsynced once, at commit. Without help the kernel leaves the whole object
dirty in the page cache until then, so the final fsync writes all of it while the uploader
waits. ``start_writeback`` (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``, which does not
wait) after every gathered chunk overlaps the disk with the network, and the commit's fsync has
little left to do. It is only a hint: durability still comes from that fsync. Where the call
is unavailable (not Linux, no libc) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Callable

SYNC_FILE_RANGE_WRITE = 2


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
