"""Page-cache hints: the data is intact, and where the platform honours the hint (Linux on a
disk file system) dropped ranges are no longer cached and kept ranges are. Ranges are 4 MiB
aligned: the kernel caches a file in folios of up to 2 MiB and drops only whole ones."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from nuclux.node.store_index import pread_cached
from nuclux.pagecache import Dropper, drop_cached, start_writeback, wait_written

MIB = 1 << 20
PIECE = 4 * MIB


def _cached(fd: int, offset: int, length: int) -> bool:
    return pread_cached(fd, length, offset) is not None


def _platform_drops(tmp_path: Path) -> bool:
    probe = tmp_path / "probe"
    probe.write_bytes(os.urandom(64 << 10))
    fd = os.open(probe, os.O_RDWR)
    try:
        os.fsync(fd)
        before = _cached(fd, 0, 64 << 10)
        drop_cached(fd)
        return before and not _cached(fd, 0, 64 << 10)
    finally:
        os.close(fd)


def test_drop_after_fsync_keeps_the_data(tmp_path: Path) -> None:
    data = os.urandom(2 * PIECE)
    path = tmp_path / "f"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, data)
        start_writeback(fd, 0, len(data))
        wait_written(fd, 0, len(data))
        drop_cached(fd, 0, PIECE)  # the first half only
        if _platform_drops(tmp_path):
            assert not _cached(fd, 0, PIECE)
            assert _cached(fd, PIECE, PIECE)
        assert os.pread(fd, len(data), 0) == data
    finally:
        os.close(fd)


def test_dropper_keeps_the_last_bytes_cached(tmp_path: Path) -> None:
    """Eight 4 MiB pieces written out of order from four threads, two pieces' worth kept:
    the pieces recorded first are no longer cached, the last two are, and the data reads
    back whole."""
    pieces = [os.urandom(PIECE) for _ in range(8)]
    path = tmp_path / "out"
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        dropper = Dropper(fd, keep=2 * PIECE)
        order = [1, 0, 3, 2, 5, 4, 7, 6]
        lock = threading.Lock()
        recorded: list[int] = []

        def write(i: int) -> None:
            os.pwrite(fd, pieces[i], i * PIECE)
            with lock:  # record in a known order so the test knows which were dropped
                recorded.append(i)
                dropper.written(i * PIECE, PIECE)

        for group in (order[:4], order[4:]):
            threads = [threading.Thread(target=write, args=(i,)) for i in group]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        os.fsync(fd)
        if _platform_drops(tmp_path):
            assert not any(_cached(fd, i * PIECE, PIECE) for i in recorded[:6])
            assert all(_cached(fd, i * PIECE, PIECE) for i in recorded[6:])
        assert os.pread(fd, 8 * PIECE, 0) == b"".join(pieces)
    finally:
        os.close(fd)
