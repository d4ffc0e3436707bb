"""The account's file index on the network: read the newest copy, batch changes, write back.

Theory of operation
-------------------
The index (``nuclux.core.file_index``) is object ``i/0`` on up to five of the account's
storage leases. Reading asks every live lease of the account (a second device knows nothing
but the seed phrase: its leases come from the chain) and keeps the copy with the highest
counter. Changes (``put``/``remove``) are kept as a list of operations and written once per
``flush``, not once per file. A flush reads the newest copy again and replays the pending
operations on it, so a change another device made in the meantime is kept, then writes the
result with a fresh nonce and a higher counter to up to five leases on distinct providers
(those that held the index first), so any four may fail. At least one copy must be written
for the flush to succeed. A provider that does not answer a read within ``probe_timeout``
counts as down (the index is small).
"""

from __future__ import annotations

import asyncio
import os

from nuclux.core.file_index import (
    FileIndex,
    IndexEntry,
    empty_index,
    newest,
    open_index,
    seal_index,
)
from nuclux.errors import IntegrityError, NucluxError, ObjectNotFound, UsageError
from nuclux.sdk.leases import LeaseBook
from nuclux.sdk.nodeapi import INDEX_OBJECT
from nuclux.sdk.peers import Peers, gather_answers
from nuclux.sdk.settings import INDEX_COPIES, StorageSettings


class IndexUnavailable(NucluxError):
    """No copy of the index could be read and some of the account's providers did not
    answer: it is not safe to assume the account has no files."""


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
        self._base: FileIndex | None = None
        self._homes: list[int] = []  # leases that held the newest copy
        self._ops: list[IndexEntry | bytes] = []  # an entry to put, or a file id to remove
        self._lock = asyncio.Lock()
        self.writes = 0

    @property
    def dirty(self) -> bool:
        return bool(self._ops)

    async def current(self) -> FileIndex:
        """The index as this client sees it: the newest copy read, with pending changes."""
        if self._base is None:
            async with self._lock:  # IndexUnavailable leaves it unread: the next call retries
                if self._base is None:
                    self._base = await self._read()
        return self._apply(self._base)

    def put(self, entry: IndexEntry) -> None:
        self._ops.append(entry)

    def remove(self, file_id: bytes) -> None:
        self._ops.append(file_id)

    def _apply(self, index: FileIndex) -> FileIndex:
        for op in self._ops:
            if isinstance(op, IndexEntry):
                index = index.put(op)
            elif index.get(op) is not None:
                index = index.remove(op)
        return index

    async def _read(self) -> FileIndex:
        leases = await self.leases.mine()
        outcomes = await gather_answers(  # small objects: a provider silent this long is down
            [self._fetch(lease.id) for lease in leases],
            timeout=self.settings.probe_timeout,
            grace=self.settings.manifest_grace,
        )
        copies: list[tuple[int, FileIndex]] = []
        unreachable: list[str] = []
        for lease, got in zip(leases, outcomes, strict=True):
            if isinstance(got, FileIndex):
                copies.append((lease.id, got))
            elif isinstance(got, BaseException):
                unreachable.append(f"lease {lease.id}: {got or type(got).__name__}")
        if not copies:
            if unreachable:  # the index may be on those: never start over from an empty one
                raise IndexUnavailable(
                    "the file index could not be read: no copy answered and"
                    f" {len(unreachable)} of the account's providers did not"
                    f" ({'; '.join(unreachable[:3])})"
                )
            self._homes = []
            return empty_index(self.owner)
        best = newest(index for _, index in copies)
        self._homes = [lid for lid, index in copies if index.counter == best.counter]
        return best

    async def _fetch(self, lease_id: int) -> FileIndex | None:
        _, client = await self.peers.client_for_lease(lease_id)
        try:
            data = await client.get(lease_id, INDEX_OBJECT)
        except ObjectNotFound:
            return None
        try:
            return open_index(data, owner=self.owner, x25519_private=self._x)
        except (IntegrityError, UsageError):
            return None  # a damaged or foreign copy: the others decide

    async def flush(self) -> bool:
        """Write pending changes (True if anything was written)."""
        async with self._lock:
            if not self._ops:
                return False
            fresh = await self._read()
            merged = self._apply(fresh)
            if merged.counter == fresh.counter:  # nothing changed (removals of absent files)
                self._base, self._ops = fresh, []
                return False
            await self._write(merged)
            self._base, self._ops = merged, []
            return True

    async def _write(self, index: FileIndex) -> None:
        if index.counter == 0:
            return
        data = seal_index(index, x25519_private=self._x, nonce=os.urandom(12))
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
                *(self._put(lid, data) for lid in batch), return_exceptions=True
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

    async def _put(self, lease_id: int, data: bytes) -> None:
        _, client = await self.peers.client_for_lease(lease_id)
        await asyncio.wait_for(
            client.put(lease_id, INDEX_OBJECT, data), self.settings.request_timeout
        )
