"""The account's file index on the network: read the newest copy, batch changes, write back.

Theory of operation
-------------------
The index is written in format 2 (``nuclux.core.index_tree``): a head, object ``i/0``, names
content-addressed pages ``i/p/<name>``; copies written by earlier releases in format 1
(``nuclux.core.file_index``: pages ``i/0`` .. ``i/62``) are read, and the first write moves
them to format 2. Up to five of the account's storage leases on distinct providers hold a
copy, so any four may fail.

Reading asks every live lease of the account (a second device knows nothing but the seed
phrase: its leases come from the chain) for ``i/0`` and ranks the copies found, newest first
(``index_copies.order``); the first copy whose pages all open is the index. A copy that does
not open, or whose pages no lease holding it serves (torn, damaged, another account's), is
passed over for the next one, down to older counters if need be; pages are fetched from all
of a copy's leases, whichever serves them. ``list`` needs every page; a write only the pages
its changes fall in.

Changes (``put``/``remove``) are kept as a list of operations and written once per
``flush``, not once per file; ``current`` applies only the operations added since its last
call to the view it keeps. A flush reads the copies again (a change another device made in
the meantime is kept), applies the pending operations to the pages they fall in (``plan``),
seals the changed pages anew, and writes to each target lease the new pages and then the
head, in object batches the node stores atomically (the head last in the last batch, or in
a PUT of its own after them once it is larger than a batch's object): a lease that held the
copy the flush started from receives only the new pages, any other all of them. A head is
therefore never stored before its pages; a small index is one request per lease. Once a
head is stored, the lease's pages retired an hour ago are deleted (``index_tree.retire``),
and a format 1 copy's pages ``i/1`` .. on it. At least one copy must be written for the
flush to succeed. A provider that does not answer ``i/0`` within
``probe_timeout`` counts as down; each page fetch or write gets ``request_timeout``, and as
for the heads a reader waits at most ``manifest_grace`` for more copies once one answers.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence

from nuclux.core.batch import MAX_OBJECT_BYTES, chunk
from nuclux.core.file_index import (
    Change,
    FileIndex,
    IndexEntry,
    IndexPage,
    empty_index,
    index_key,
)
from nuclux.core.index_tree import (
    IndexHead,
    PageRef,
    Plan,
    plan,
    retire,
    seal_page,
    sealed_head,
    slots,
    split,
)
from nuclux.core.index_tree import join as join_head
from nuclux.core.reference import index_object_id, index_page_object_id
from nuclux.errors import IntegrityError, NucluxError, ObjectNotFound, UsageError
from nuclux.sdk.index_cache import PageCache
from nuclux.sdk.index_copies import Copy, CopyReader, NotOpened, order
from nuclux.sdk.leases import LeaseBook
from nuclux.sdk.peers import Peers, gather_answers
from nuclux.sdk.settings import INDEX_COPIES, StorageSettings


class IndexUnavailable(NucluxError):
    """No copy of the index could be read and some of the account's providers did not
    answer: it is not safe to assume the account has no files."""


class IndexUnreadable(IndexUnavailable):
    """Copies of the index exist but none opens (written by a newer Nuclux, or damaged on
    every provider): starting over from an empty index would hide the account's files."""


def _note_failure(lease_id: int, got: object, unopened: list[str], unreachable: list[str]) -> None:
    """Record why lease ``lease_id`` gave no copy: one that does not open (``unopened``), or
    no answer (``unreachable``); nothing for a lease that holds no index (``None``)."""
    if isinstance(got, NotOpened):
        unopened.append(f"lease {lease_id}: {got}")
    elif isinstance(got, BaseException):
        unreachable.append(f"lease {lease_id}: {got or type(got).__name__}")


def _unreadable(unopened: Sequence[str]) -> IndexUnreadable:
    return IndexUnreadable(
        f"the file index exists on {len(unopened)} of the account's leases but no copy opens"
        f" ({'; '.join(unopened[:3])}); if it was written by a newer Nuclux, upgrade. Nothing"
        " was changed"
    )


class IndexStore:
    def __init__(
        self,
        owner: str,
        x25519_private: bytes,
        leases: LeaseBook,
        peers: Peers,
        settings: StorageSettings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.owner = empty_index(owner).owner
        self._key = index_key(x25519_private, owner)
        cache = PageCache(settings.index_cache) if settings.index_cache else None
        self.copies = CopyReader(owner, x25519_private, self._key, peers, cache)
        self.leases, self.peers, self.settings, self._clock = leases, peers, settings, clock
        self._view: FileIndex | None = None  # the newest copy read, with _ops[:_seen] applied
        self._seen = 0
        self._known: Copy | None = None  # the copy this client last wrote
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
                    self._view, self._seen = view, 0
        if self._seen < len(self._ops):  # apply only what was added since the last call
            view = view.apply(self._ops[self._seen :])
            self._view, self._seen = view, len(self._ops)
        return view

    def put(self, entry: IndexEntry) -> None:
        self._ops.append(entry)

    def remove(self, file_id: bytes) -> None:
        self._ops.append(file_id)

    async def _read(self) -> FileIndex:
        if self._known is not None:  # what this client wrote: its pages are mostly held
            try:
                return await self._whole(self._known)
            except (NucluxError, OSError, TimeoutError):  # NotOpened too
                self._known = None
        unopened: list[str] = []
        for copy in await self._copies(unopened):
            try:
                return await self._whole(copy)
            except NotOpened as exc:
                unopened.append(f"leases {copy.homes}: {exc}")
        if unopened:  # never start over from an empty index while copies exist
            raise _unreadable(unopened)
        return FileIndex(self.owner, 0)

    async def _whole(self, copy: Copy) -> FileIndex:
        if copy.head is None:
            assert copy.joined is not None
            return copy.joined
        got = await self.copies.load(copy, range(len(copy.head.pages)), self._timeout)
        try:
            return join_head(copy.head, [got[s] for s in range(len(copy.head.pages))])
        except (IntegrityError, UsageError) as exc:
            raise NotOpened(f"its pages do not join: {exc}") from None

    @property
    def _timeout(self) -> float:
        return self.settings.request_timeout

    async def _copies(self, unopened: list[str]) -> list[Copy]:
        """The distinct copies on the account's leases, newest first; ``unopened`` gets
        those that exist but do not open. ``IndexUnavailable`` if none answered."""
        leases = await self.leases.mine()
        firsts = await gather_answers(  # small objects: a provider silent this long is down
            [self.copies.first(lease.id) for lease in leases],
            timeout=self.settings.probe_timeout,
            grace=self.settings.manifest_grace,
        )
        unreachable: list[str] = []
        found: dict[int, Copy] = {}  # by the opened object: the same bytes open to one
        v1: list[tuple[int, IndexPage]] = []
        for lease, got in zip(leases, firsts, strict=True):
            if isinstance(got, IndexHead):
                found.setdefault(id(got), Copy(got.counter, [], head=got)).homes.append(lease.id)
            elif isinstance(got, IndexPage):
                v1.append((lease.id, got))
            else:
                _note_failure(lease.id, got, unopened, unreachable)
        copies = list(found.values()) + await self._v1_copies(v1, unopened, unreachable)
        if not copies and unreachable:  # the index may be on those: never assume it empty
            raise IndexUnavailable(
                "the file index could not be read: no copy answered and"
                f" {len(unreachable)} of the account's providers did not"
                f" ({'; '.join(unreachable[:3])})"
            )
        return order(copies)

    async def _v1_copies(
        self, firsts: list[tuple[int, IndexPage]], unopened: list[str], unreachable: list[str]
    ) -> list[Copy]:
        """The newest format 1 copies that join (older counters only if none does)."""
        joined: dict[tuple[int, ...], FileIndex | str] = {}
        for counter in sorted({head.counter for _, head in firsts}, reverse=True):
            group = [(lid, head) for lid, head in firsts if head.counter == counter]
            outcomes = await gather_answers(  # the other pages: up to 4 MiB a copy
                [self.copies.v1_copy(lid, head, joined) for lid, head in group],
                timeout=self._timeout,
                grace=self.settings.manifest_grace,
            )
            copies: dict[int, Copy] = {}
            for (lid, head), got in zip(group, outcomes, strict=True):
                if isinstance(got, FileIndex):
                    copy = copies.setdefault(id(got), Copy(counter, [], first=head, joined=got))
                    copy.homes.append(lid)
                else:
                    _note_failure(lid, got, unopened, unreachable)
            if copies:
                return list(copies.values())
        return []

    # -- writing ---------------------------------------------------------------------------

    def _rebase(self, done: int, written: Copy | None) -> None:
        """The first ``done`` pending operations are stored (or changed nothing)."""
        del self._ops[:done]
        self._view, self._seen = None, 0
        if written is not None:
            self._known = written

    async def flush(self) -> bool:
        """Write pending changes (True if anything was written)."""
        async with self._lock:
            if not self._ops:
                return False
            done = len(self._ops)  # changes made while this flush writes stay pending
            unopened: list[str] = []
            copies: list[Copy | None] = list(await self._copies(unopened))
            if not copies and not unopened:
                copies = [None]  # no index yet
            for copy in copies:
                try:
                    written = await self._flush_onto(copy, self._ops[:done])
                except NotOpened as exc:
                    unopened.append(f"leases {copy.homes if copy else []}: {exc}")
                    continue
                self._rebase(done, written)
                return written is not None
            raise _unreadable(unopened)

    async def _flush_onto(self, copy: Copy | None, ops: Sequence[Change]) -> Copy | None:
        """Write ``ops`` applied to ``copy`` (None: no index yet); the copy written, or
        None if they changed nothing."""
        now = int(self._clock())
        if copy is not None and copy.head is None:  # format 1: every page is new
            assert copy.joined is not None
            merged = copy.joined.apply(ops)
            if merged.counter == copy.counter:
                return None
            base = IndexHead(self.owner, copy.counter, now, ())
            planned = Plan(merged.counter - copy.counter, tuple(split(merged.entries)), ())
            counter = merged.counter
        else:
            head = None if copy is None else copy.head
            base = IndexHead(self.owner, 0, now, ()) if head is None else head
            loaded = await self.copies.load(copy, slots(base, ops), self._timeout) if copy else {}
            planned = plan(base, loaded, ops)
            if not planned.made:
                return None
            counter = base.counter + planned.made
        refs, new_items = self._seal(planned)
        retired, due = retire(base, planned.dropped, now)
        head, data = sealed_head(
            IndexHead(self.owner, counter, now, tuple(refs), retired),
            key=self._key,
            nonce=os.urandom(12),
        )
        homes = await self._write(
            copy, data, new_items, [r for r in planned.layout if isinstance(r, PageRef)], due
        )
        for ref in planned.dropped:
            self.copies.pages.pop(ref.name, None)
        return Copy(counter, homes, head=head)

    def _seal(self, planned: Plan) -> tuple[list[PageRef], list[tuple[bytes, bytes]]]:
        refs: list[PageRef] = []
        items: list[tuple[bytes, bytes]] = []
        for page in planned.layout:
            if isinstance(page, PageRef):
                refs.append(page)
                continue
            ref, sealed = seal_page(self.owner, page, key=self._key, nonce=os.urandom(12))
            self.copies.pages[ref.name] = page
            if self.copies.cache is not None:
                self.copies.cache.put(ref.name, sealed)
            refs.append(ref)
            items.append((index_page_object_id(ref.name), sealed))
        return refs, items

    async def _write(
        self,
        copy: Copy | None,
        head: bytes,
        new: list[tuple[bytes, bytes]],
        kept: list[PageRef],
        due: Sequence[bytes],
    ) -> list[int]:
        """Store the head and its pages on up to ``INDEX_COPIES`` leases of distinct
        providers (those holding ``copy`` first); the leases written."""
        mine = await self.leases.mine()
        provider: dict[int, str] = {lease.id: lease.provider.lower() for lease in mine}
        homes = copy.homes if copy else []
        ordered = [lid for lid in homes if lid in provider]
        ordered += [lease.id for lease in mine if lease.id not in ordered]
        seen: set[str] = set()
        targets = []  # one lease per provider: copies on distinct machines
        for lid in ordered:
            if provider[lid] not in seen:
                seen.add(provider[lid])
                targets.append(lid)
        kept_bytes: list[asyncio.Task[list[tuple[bytes, bytes]]]] = []

        async def all_pages() -> list[tuple[bytes, bytes]]:
            if not kept_bytes:  # fetched once, only if a lease without the copy is written
                kept_bytes.append(asyncio.ensure_future(self._kept(copy, kept)))
            return new + await kept_bytes[0]

        async def one(lid: int) -> None:
            home = copy is not None and copy.head is not None and lid in homes
            await self._store(lid, new if home else await all_pages(), head)
            await self._tidy(lid, copy, due if home else ())

        errors: list[str] = []
        written: list[int] = []
        while targets and len(written) < INDEX_COPIES:
            take = INDEX_COPIES - len(written)
            batch, targets = targets[:take], targets[take:]
            outcomes = await asyncio.gather(*(one(lid) for lid in batch), return_exceptions=True)
            for lid, outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    errors.append(f"lease {lid}: {outcome or type(outcome).__name__}")
                else:
                    written.append(lid)
        if not written:
            raise NucluxError(
                "the file index could not be written to any lease"
                + (f": {'; '.join(errors)}" if errors else " (the account holds no lease)")
            )
        self.writes += 1
        return written

    async def _kept(self, copy: Copy | None, kept: list[PageRef]) -> list[tuple[bytes, bytes]]:
        if copy is None or not kept:
            return []
        gate = asyncio.Semaphore(16)

        async def one(ref: PageRef) -> tuple[bytes, bytes]:
            async with gate:
                data = await self.copies.raw(copy.homes, ref, self._timeout)
            return index_page_object_id(ref.name), data

        return list(await asyncio.gather(*(one(r) for r in kept)))

    async def _store(self, lease_id: int, pages: list[tuple[bytes, bytes]], head: bytes) -> None:
        """The pages, then the head: in object batches, each stored atomically, the head last
        in the last one if it fits an object of a batch, else alone after them."""
        _, client = await self.peers.client_for_lease(lease_id)
        fits = len(head) <= MAX_OBJECT_BYTES
        batches = chunk([*pages, (index_object_id(0), head)] if fits else pages)
        for batch in batches:
            await asyncio.wait_for(client.put_batch(lease_id, batch), self._timeout)
        if not fits:
            await asyncio.wait_for(client.put(lease_id, index_object_id(0), head), self._timeout)

    async def _tidy(self, lease_id: int, copy: Copy | None, due: Sequence[bytes]) -> None:
        """Best effort, once the head is stored: delete the retired pages that are due and
        a format 1 copy's pages beyond ``i/0``. A failure leaves garbage, never a gap."""
        ids = [index_page_object_id(name) for name in due]
        if copy is not None and copy.first is not None and lease_id in copy.homes:
            ids += [index_object_id(p) for p in range(1, copy.first.pages)]
        if not ids:
            return
        _, client = await self.peers.client_for_lease(lease_id)
        for oid in ids:
            try:
                await asyncio.wait_for(client.delete(lease_id, oid), self._timeout)
            except ObjectNotFound:
                continue
            except (NucluxError, OSError, TimeoutError):
                return
