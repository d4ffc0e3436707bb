"""Allocator settings for Nuclux processes that move bulk data (the node, the CLI, benches).

glibc serves allocations above a threshold (128 KiB, rising dynamically to at most 32 MiB)
with fresh ``mmap`` pages and gives them back on free; it also trims the heap top whenever
more than twice that is free. A process streaming megabyte chunks then page-faults on every
chunk: measured on the read path, that cost a third of the throughput. ``tune_allocator``
keeps chunk-sized buffers in the heap (threshold 32 MiB, the largest glibc accepts) and trims
only above 128 MiB, so memory is reused instead of faulted in again. Peak memory is unchanged;
idle memory may stay up to the trim threshold higher. Elsewhere (not glibc) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 128 << 20

_tuned = False


def tune_allocator() -> bool:
    """Apply the settings once per process; True if the allocator took them."""
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    _tuned = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    return _tuned
