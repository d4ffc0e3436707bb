"""The account's file index on the network: read the newest copy, batch changes, write back.

Theory of operation
-------------------
The index (``nuclux.core.file_index``) is stored as pages, objects ``i/0``, ``i/1``, ... on up
to five of the account's storage leases. Reading asks every live lease of the account (a
second device knows nothing but the seed phrase: its leases come from the chain) for page 0,
then fetches the other pages of the copies with the highest counter from the leases holding
them, all at once; a copy whose pages do not join (torn, malformed, another account's) is
ignored like a damaged one and the next copies decide, down to older counters if need be.
Identical copies (one write, several leases) are decrypted and decoded once. Changes
(``put``/``remove``) are kept as a list of operations and written once per ``flush``, not
once per file; ``current`` applies only the operations added since its last call to the
view it keeps. A flush reads the newest copy again and replays the pending operations on it,
so a change another device made in the meantime is kept, then writes the result with a fresh
write id and a higher counter to up to five leases on distinct providers (those that held
the index first), so any four may fail. All pages of one copy go to a lease in one object
batch, which the node stores atomically (a lone page in one PUT, atomic too): a copy is never
torn by a failed write. Pages left on a lease by an earlier, longer index are not deleted:
readers follow ``pages``. At least one copy must be written for the flush to succeed. A
provider that does not answer the read of page 0 within ``probe_timeout`` counts as down; the
other pages of a copy get ``request_timeout``, and as with page 0 a reader waits at most
``manifest_grace`` for more copies once one is whole.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from nuclux.core.file_index import (
    Change,
    FileIndex,
    IndexEntry,
    IndexPage,
    empty_index,
    join_pages,
    newest,
    open_page,
    seal_pages,
)
from nuclux.core.reference import index_object_id
from nuclux.errors import IntegrityError, NucluxError, ObjectNotFound, UsageError
from nuclux.sdk.leases import LeaseBook
from nuclux.sdk.peers import Peers, gather_answers
from nuclux.sdk.settings import INDEX_COPIES, StorageSettings


class IndexUnavailable(NucluxError):
    """No copy of the index could be read and some of the account's providers did not
    answer: it is not safe to assume the account has no files."""


class IndexUnreadable(IndexUnavailable):
    """Copies of the index exist but none opens (written by a newer Nuclux, or damaged on
    every provider): starting over from an empty index would hide the account's files."""


class _NotOpened(NucluxError):
    """A copy (or one of its pages) exists but does not open or join: the reason."""


def _note_failure(lease_id: int, got: object, unopened: list[str], unreachable: list[str]) -> None:
    """Record why lease ``lease_id`` gave no copy: one that does not open (``unopened``), or
    no answer (``unreachable``); nothing for a lease that holds no index (``None``)."""
    if isinstance(got, _NotOpened):
        unopened.append(f"lease {lease_id}: {got}")
    elif isinstance(got, BaseException):
        unreachable.append(f"lease {lease_id}: {got or type(got).__name__}")


K = TypeVar("K")
V = TypeVar("V")


def _once(done: dict[K, V | str], key: K, make: Callable[[], V], why: str) -> V:
    """``make()`` once per ``key`` (copies of identical bytes are opened once); a format or
    integrity failure is remembered too and raised as ``_NotOpened`` with ``why``."""
    if key not in done:
        try:
            done[key] = make()
        except (IntegrityError, UsageError) as exc:
            done[key] = f"{why}{exc}"
    got = done[key]
    if isinstance(got, str):
        raise _NotOpened(got)
    return got


class IndexStore:
    def __init__(
        self,
        owner: str,
        x25519_private: bytes,
        leases: LeaseBook,
        peers: Peers,
        settings: StorageSettings,
    ) -> None:
        self.owner = owner
        self._x = x25519_private
        self.leases, self.peers, self.settings = leases, peers, settings
        self._view: FileIndex | None = None  # the newest copy read, with _ops[:_seen] applied
        self._seen = 0
        self._homes: list[int] = []  # leases that held the newest copy
        self._ops: list[Change] = []  # an entry to put, or a file id to remove
        self._lock = asyncio.Lock()
        self.writes = 0

    @property
    def dirty(self) -> bool:
        return bool(self._ops)

    async def current(self) -> FileIndex:
        """The index as this client sees it: the newest copy read, with pending changes."""
        view = self._view
        if view is None:
            async with self._lock:  # IndexUnavailable leaves it unread: the next call retries
                view = self._view
                if view is None:
                    view = await self._read()
                    self._rebase(view, 0)
        if self._seen < len(self._ops):  # apply only what was added since the last call
            view = view.apply(self._ops[self._seen :])
            self._view, self._seen = view, len(self._ops)
        return view

    def put(self, entry: IndexEntry) -> None:
        self._ops.append(entry)

    def remove(self, file_id: bytes) -> None:
        self._ops.append(file_id)

    def _rebase(self, index: FileIndex, done: int) -> None:
        """``index`` is now the view: it holds the first ``done`` pending operations."""
        del self._ops[:done]
        self._view, self._seen = index, 0

    async def _read(self) -> FileIndex:
        leases = await self.leases.mine()
        opened: dict[bytes, IndexPage | str] = {}  # identical copies are opened once (or why not)
        firsts = await gather_answers(  # small objects: a provider silent this long is down
            [self._page(lease.id, 0, opened) for lease in leases],
            timeout=self.settings.probe_timeout,
            grace=self.settings.manifest_grace,
        )
        heads: list[tuple[int, IndexPage]] = []
        unreachable: list[str] = []
        unopened: list[str] = []  # copies that exist but do not open or join
        for lease, got in zip(leases, firsts, strict=True):
            if isinstance(got, IndexPage):
                heads.append((lease.id, got))
            else:
                _note_failure(lease.id, got, unopened, unreachable)
        copies: list[tuple[int, FileIndex]] = []
        joined: dict[tuple[int, ...], FileIndex | str] = {}
        for counter in sorted({head.counter for _, head in heads}, reverse=True):
            group = [(lid, head) for lid, head in heads if head.counter == counter]
            outcomes = await gather_answers(  # the other pages: up to 4 MiB a copy
                [self._copy(lid, head, opened, joined) for lid, head in group],
                timeout=self.settings.request_timeout,
                grace=self.settings.manifest_grace,
            )
            for (lid, _), outcome in zip(group, outcomes, strict=True):
                if isinstance(outcome, FileIndex):
                    copies.append((lid, outcome))
                else:
                    _note_failure(lid, outcome, unopened, unreachable)
            if copies:  # the newest copies that join: older ones are not needed
                break
        if not copies:
            if unreachable:  # the index may be on those: never start over from an empty one
                raise IndexUnavailable(
                    "the file index could not be read: no copy answered and"
                    f" {len(unreachable)} of the account's providers did not"
                    f" ({'; '.join(unreachable[:3])})"
                )
            if unopened:  # never write over copies this version cannot read
                raise IndexUnreadable(
                    f"the file index exists on {len(unopened)} of the account's leases but no"
                    f" copy opens ({'; '.join(unopened[:3])}); if it was written by a newer"
                    " Nuclux, upgrade. Nothing was changed"
                )
            self._homes = []
            return empty_index(self.owner)
        best = newest(index for _, index in copies)
        self._homes = [lid for lid, index in copies if index.counter == best.counter]
        return best

    async def _page(
        self, lease_id: int, page: int, opened: dict[bytes, IndexPage | str]
    ) -> IndexPage | None:
        """Page ``page`` on ``lease_id``; None if there is none, ``_NotOpened`` if it does
        not open (a damaged or foreign copy, or a newer format: the other copies decide)."""
        _, client = await self.peers.client_for_lease(lease_id)
        try:
            data = await client.get(lease_id, index_object_id(page))
        except ObjectNotFound:
            return None
        return _once(
            opened,
            data,
            lambda: open_page(data, owner=self.owner, x25519_private=self._x),
            f"page {page}: ",
        )

    async def _copy(
        self,
        lease_id: int,
        head: IndexPage,
        opened: dict[bytes, IndexPage | str],
        joined: dict[tuple[int, ...], FileIndex | str],
    ) -> FileIndex:
        """The copy on ``lease_id`` whose page 0 is ``head``; ``_NotOpened`` if its pages do
        not join (torn, or pages of two writes)."""
        rest = await asyncio.gather(
            *(self._page(lease_id, p, opened) for p in range(1, head.pages)),
            return_exceptions=True,
        )
        pages = [head]
        for p, got in enumerate(rest, start=1):
            if isinstance(got, BaseException):
                raise got
            if got is None:
                raise _NotOpened(f"page {p} of {head.pages} is missing")
            pages.append(got)
        key = tuple(id(p) for p in pages)  # pages of identical bytes are one object
        return _once(joined, key, lambda: join_pages(pages), "its pages do not join: ")

    async def flush(self) -> bool:
        """Write pending changes (True if anything was written)."""
        async with self._lock:
            if not self._ops:
                return False
            fresh = await self._read()
            done = len(self._ops)  # changes made while this flush writes stay pending
            merged = fresh.apply(self._ops[:done])
            if merged.counter == fresh.counter:  # nothing changed (removals of absent files)
                self._rebase(fresh, done)
                return False
            await self._write(merged)
            self._rebase(merged, done)
            return True

    async def _write(self, index: FileIndex) -> None:
        if index.counter == 0:
            return
        pages = seal_pages(index, x25519_private=self._x, write_id=os.urandom(8))
        items = [(index_object_id(p), data) for p, data in enumerate(pages)]
        mine = await self.leases.mine()
        provider: dict[int, str] = {lease.id: lease.provider.lower() for lease in mine}
        ordered = [lid for lid in self._homes if lid in provider]
        ordered += [lease.id for lease in mine if lease.id not in ordered]
        seen: set[str] = set()
        targets = []  # one lease per provider: copies on distinct machines
        for lid in ordered:
            if provider[lid] not in seen:
                seen.add(provider[lid])
                targets.append(lid)
        errors: list[str] = []
        written = 0
        while targets and written < INDEX_COPIES:
            batch, targets = targets[: INDEX_COPIES - written], targets[INDEX_COPIES - written :]
            outcomes = await asyncio.gather(
                *(self._put(lid, items) for lid in batch), return_exceptions=True
            )
            for lid, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    errors.append(f"lease {lid}: {outcome or type(outcome).__name__}")
                else:
                    written += 1
        if not written:
            raise NucluxError(
                "the file index could not be written to any lease"
                + (f": {'; '.join(errors)}" if errors else " (the account holds no lease)")
            )
        self.writes += 1

    async def _put(self, lease_id: int, items: Sequence[tuple[bytes, bytes]]) -> None:
        """Every page of one copy in one object batch: the node stores all or none. A lone
        page is one PUT, atomic too (and credited with the bytes of the page it replaces)."""
        _, client = await self.peers.client_for_lease(lease_id)
        if len(items) == 1:
            object_id, data = items[0]
            write: Awaitable[object] = client.put(lease_id, object_id, data)
        else:
            write = client.put_batch(lease_id, items)
        await asyncio.wait_for(write, self.settings.request_timeout)
