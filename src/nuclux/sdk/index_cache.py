"""A device's copy of its file index's pages, so a listing fetches only pages it has not seen.

Format 2 index pages (``nuclux.core.index_tree``) never change once stored and are named by
the sha256 of their sealed bytes, so a page kept on disk is either exactly the page of that
name or detectably not: ``get`` hashes what it reads and throws away a file that does not
match. The pages stay sealed (AES-GCM under the account's index key), so the cache holds
nothing a provider does not. Each page is one file ``<name hex>`` in the directory, written
to a temporary name and renamed. Past ``limit`` bytes the least recently used pages are
removed, down to three quarters of it. Any error of the disk makes the cache a miss, never a
failure: the network has every page.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from nuclux.core.index_tree import NAME_BYTES, PAGE_BYTES, page_name

DEFAULT_LIMIT = 256 << 20


class PageCache:
    def __init__(self, directory: str | os.PathLike[str], limit: int = DEFAULT_LIMIT) -> None:
        self.directory = Path(directory)
        self.limit = limit
        self._total: int | None = None  # bytes held, counted at first use
        self.hits = self.misses = 0

    def _path(self, name: bytes) -> Path:
        if len(name) != NAME_BYTES:
            raise ValueError("a page name is 16 bytes")
        return self.directory / name.hex()

    def get(self, name: bytes) -> bytes | None:
        """The sealed page ``name`` if held intact, else None."""
        path = self._path(name)
        try:
            with path.open("rb") as f:
                data = f.read(PAGE_BYTES + 1)
            os.utime(path)  # recently used
        except OSError:
            self.misses += 1
            return None
        if page_name(data) != name:  # damaged on disk: drop it, fetch it again
            with contextlib.suppress(OSError):
                path.unlink()
            self.misses += 1
            return None
        self.hits += 1
        return data

    def put(self, name: bytes, data: bytes) -> None:
        """Keep ``data``, the sealed page named ``name`` (checked)."""
        if page_name(data) != name or len(data) > PAGE_BYTES:
            raise ValueError("a page is kept under its own name")
        path = self._path(name)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if path.exists():
                return
            tmp.write_bytes(data)
            os.replace(tmp, path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink()
            return
        self._total = self._count() if self._total is None else self._total + len(data)
        if self._total > self.limit:
            self._prune()

    def _entries(self) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(self.directory) as it:
                return [e for e in it if len(e.name) == 2 * NAME_BYTES and e.is_file()]
        except OSError:
            return []

    def _count(self) -> int:
        total = 0
        for e in self._entries():
            with contextlib.suppress(OSError):
                total += e.stat().st_size
        return total

    def _prune(self) -> None:
        """Remove the least recently used pages until three quarters of ``limit`` is held."""
        stats = []
        for e in self._entries():
            with contextlib.suppress(OSError):
                st = e.stat()
                stats.append((st.st_mtime, st.st_size, e.path))
        stats.sort()
        total = sum(size for _, size, _ in stats)
        for _, size, path in stats:
            if total <= self.limit * 3 // 4:
                break
            with contextlib.suppress(OSError):
                os.unlink(path)
                total -= size
        self._total = total
