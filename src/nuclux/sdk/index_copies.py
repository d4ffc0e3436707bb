"""Copies of the account's file index on its leases: what ``i/0`` holds, and fetching pages.

Theory of operation
-------------------
Every lease of the account may hold a copy of the index; ``i/0`` says which: a format 2 head
(``nuclux.core.index_tree``) or page 0 of a format 1 index (``nuclux.core.file_index``).
``Copy`` is one distinct copy found, with the leases holding it (``homes``: the same bytes at
``i/0``). ``order`` ranks copies newest first: the highest counter, then format 2 before 1,
then the larger tie-break digest (a format 1 copy's is the sha256 of its entries, known only
once its pages are joined, so format 1 copies of one counter are joined together and ranked
by ``newest``).

A format 2 copy's pages are fetched by name from its homes (the head's home first, the
others if it fails; a device keeps the sealed pages it saw, ``index_cache``), at most
``PAGE_FETCHES`` at once, each checked against the head (``open_page``). Pages already opened
are kept by name, so a reader that writes and reads again fetches only the pages it does not
hold. A page that no home serves makes the copy torn (``Torn``): the next copy in the order
decides.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from nuclux.core.file_index import FileIndex, IndexPage, join_pages, tiebreak
from nuclux.core.file_index import open_page as open_v1_page
from nuclux.core.index_entries import IndexEntry
from nuclux.core.index_tree import IndexHead, PageRef, open_head, open_page, page_name
from nuclux.core.reference import index_object_id, index_page_object_id
from nuclux.errors import IntegrityError, NucluxError, ObjectNotFound, UsageError
from nuclux.sdk.index_cache import PageCache
from nuclux.sdk.peers import Peers

PAGE_FETCHES = 16


class NotOpened(NucluxError):
    """A copy (or one of its pages) exists but does not open or join: the reason."""


class Torn(NotOpened):
    """A format 2 copy whose pages are not all served by its homes."""


K = TypeVar("K")
V = TypeVar("V")


def once(done: dict[K, V | str], key: K, make: Callable[[], V], why: str) -> V:
    """``make()`` once per ``key`` (copies of identical bytes are opened once); a format or
    integrity failure is remembered too and raised as ``NotOpened`` with ``why``."""
    if key not in done:
        try:
            done[key] = make()
        except (IntegrityError, UsageError) as exc:
            done[key] = f"{why}{exc}"
    got = done[key]
    if isinstance(got, str):
        raise NotOpened(got)
    return got


@dataclass
class Copy:
    """One distinct copy of the index and the leases that hold it."""

    counter: int
    homes: list[int]
    head: IndexHead | None = None  # format 2
    first: IndexPage | None = None  # format 1: its page 0
    joined: FileIndex | None = None  # format 1: all its pages, once joined

    @property
    def format(self) -> int:
        return 2 if self.head is not None else 1


def order(copies: Iterable[Copy]) -> list[Copy]:
    """Newest first (format 1 copies must be joined: ``joined`` set)."""

    def rank(c: Copy) -> tuple[int, int, bytes]:
        if c.head is not None:
            return (c.counter, 2, c.head.digest)
        assert c.joined is not None
        return (c.counter, 1, tiebreak(c.joined))

    return sorted(copies, key=rank, reverse=True)


class CopyReader:
    """Opens what the account's leases hold at ``i/0`` and fetches pages of copies."""

    def __init__(
        self,
        owner: str,
        x25519_private: bytes,
        key: bytes,
        peers: Peers,
        cache: PageCache | None = None,
    ) -> None:
        self.owner, self._x, self._key, self.peers = owner, x25519_private, key, peers
        self.cache = cache  # sealed pages kept on this device (index_cache)
        self.pages: dict[bytes, tuple[IndexEntry, ...]] = {}  # opened pages by name
        self._heads: dict[bytes, IndexHead | str] = {}  # identical bytes are opened once
        self._v1: dict[bytes, IndexPage | str] = {}

    async def first(self, lease_id: int) -> IndexHead | IndexPage | None:
        """What ``i/0`` on ``lease_id`` holds: a head, a format 1 page 0, or None."""
        _, client = await self.peers.client_for_lease(lease_id)
        try:
            data = await client.get(lease_id, index_object_id(0))
        except ObjectNotFound:
            return None
        if data[:2] == b"\x02H":
            return once(
                self._heads, data, lambda: open_head(data, owner=self.owner, key=self._key), ""
            )
        return once(
            self._v1,
            data,
            lambda: open_v1_page(data, owner=self.owner, x25519_private=self._x),
            "page 0: ",
        )

    async def v1_page(self, lease_id: int, page: int) -> IndexPage | None:
        _, client = await self.peers.client_for_lease(lease_id)
        try:
            data = await client.get(lease_id, index_object_id(page))
        except ObjectNotFound:
            return None
        return once(
            self._v1,
            data,
            lambda: open_v1_page(data, owner=self.owner, x25519_private=self._x),
            f"page {page}: ",
        )

    async def v1_copy(
        self, lease_id: int, head: IndexPage, joined: dict[tuple[int, ...], FileIndex | str]
    ) -> FileIndex:
        """The format 1 copy on ``lease_id`` whose page 0 is ``head``; ``NotOpened`` if its
        pages do not join (torn, or pages of two writes)."""
        rest = await asyncio.gather(
            *(self.v1_page(lease_id, p) for p in range(1, head.pages)), return_exceptions=True
        )
        pages = [head]
        for p, got in enumerate(rest, start=1):
            if isinstance(got, BaseException):
                raise got
            if got is None:
                raise NotOpened(f"page {p} of {head.pages} is missing")
            pages.append(got)
        key = tuple(id(p) for p in pages)  # pages of identical bytes are one object
        return once(joined, key, lambda: join_pages(pages), "its pages do not join: ")

    async def raw(self, homes: Sequence[int], ref: PageRef, timeout: float) -> bytes:
        """Page ``ref``'s sealed bytes: kept on this device, else from the first of
        ``homes`` serving it whole (and then kept)."""
        if self.cache is not None and (kept := self.cache.get(ref.name)) is not None:
            return kept
        why: list[str] = []
        for lease_id in homes:
            try:
                _, client = await self.peers.client_for_lease(lease_id)
                data = await asyncio.wait_for(
                    client.get(lease_id, index_page_object_id(ref.name)), timeout
                )
                if page_name(data) == ref.name:
                    if self.cache is not None:
                        self.cache.put(ref.name, data)
                    return data
                why.append(f"lease {lease_id}: a page whose bytes do not match its name")
            except (NucluxError, OSError, TimeoutError) as exc:
                why.append(f"lease {lease_id}: {exc or type(exc).__name__}")
        raise Torn(f"page {ref.name.hex()} is served by none of its leases ({'; '.join(why)})")

    async def load(
        self, copy: Copy, slots: Iterable[int], timeout: float
    ) -> dict[int, tuple[IndexEntry, ...]]:
        """The entries of pages ``slots`` of a format 2 copy, fetched unless held."""
        assert copy.head is not None
        refs = copy.head.pages
        want = [s for s in set(slots) if s < len(refs) and refs[s].name not in self.pages]
        gate = asyncio.Semaphore(PAGE_FETCHES)

        async def fetch(s: int) -> None:
            async with gate:
                data = await self.raw(copy.homes, refs[s], timeout)
            entries = open_page(data, refs[s], owner=self.owner, key=self._key)
            self.pages[refs[s].name] = entries

        failed = [
            r
            for r in await asyncio.gather(*(fetch(s) for s in want), return_exceptions=True)
            if r is not None
        ]
        if failed:
            if isinstance(failed[0], (IntegrityError, UsageError)):
                raise NotOpened(f"a page does not open: {failed[0]}")
            raise failed[0]
        return {s: self.pages[refs[s].name] for s in set(slots) if s < len(refs)}
