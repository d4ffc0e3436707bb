"""``StorageClient``: the consumer's storage API (put, get, ls, rm, share, audit).

Theory of operation
-------------------
One client serves one account: its ``Ledger`` (chain access, signing as the account) and its
``AccountKeys`` (the same Ethereum key, and the X25519 key that opens its envelopes and its
file index). Every file gets a fresh random file key and file id here, at the SDK edge; the
formats in ``nuclux.core`` stay pure.

Changes to the file index are batched: ``put`` and ``rm`` change it in memory, ``flush``
writes it (once), and leaving ``async with StorageClient(...)`` normally flushes. A client that
is closed without flushing loses only index entries (the files themselves are stored, and
their references work).

Errors follow ``nuclux.errors``: a bad argument or missing file is ``UsageError``, too few
providers ``NotEnoughProviders`` (before any money moves), a tampered manifest or grant or a
wrong key ``IntegrityError``, a grant for someone else or an expired one ``Forbidden``.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass, replace
from types import TracebackType

from nuclux.chain import Ledger
from nuclux.core.file_index import IndexEntry
from nuclux.core.grant import grant_to_text, issue_grant
from nuclux.core.reference import Reference, parse_reference
from nuclux.errors import NucluxError, ObjectNotFound, UsageError
from nuclux.keys.derive import AccountKeys
from nuclux.sdk import reading, writing
from nuclux.sdk.audit import AuditReport, audit_file
from nuclux.sdk.context import StorageContext
from nuclux.sdk.nodeapi import block_object_id, manifest_id
from nuclux.sdk.peers import PEER_ERRORS
from nuclux.sdk.settings import Progress, StorageSettings

MAX_GRANT_DAYS = 3650


@dataclass(frozen=True, slots=True)
class FileEntry:
    """One file of the account, as ``ls`` shows it."""

    reference: Reference
    name: str
    size: int
    created_at: int
    version: int
    healthy: int | None  # shares (packed: manifest copies) last seen healthy; None: unchecked
    total: int | None = None  # n (packed: copies) when checked
    needed: int | None = None  # k (packed: 1) when checked
    status: str = "unchecked"  # healthy, degraded, lost, unreachable, unchecked


@dataclass(frozen=True, slots=True)
class RemoveResult:
    reference: Reference
    deleted: int
    problems: tuple[str, ...]


class StorageClient:
    def __init__(
        self, ledger: Ledger, keys: AccountKeys, settings: StorageSettings | None = None
    ) -> None:
        self.ctx = StorageContext.create(ledger, keys, settings or StorageSettings())

    async def __aenter__(self) -> StorageClient:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if t is None:
                await self.flush()
        finally:
            await self.close()

    async def close(self) -> None:
        await self.ctx.close()

    @property
    def address(self) -> str:
        return self.ctx.address

    @property
    def transactions(self) -> int:
        """Chain transactions this client sent (leases opened and extended)."""
        return self.ctx.leases.transactions

    # ------------------------------------------------------------------ writing

    async def put(
        self,
        path: str | os.PathLike[str],
        *,
        k: int | None = None,
        n: int | None = None,
        days: float | None = None,
        max_price: int | None = None,
        name: str | None = None,
        progress: Progress | None = None,
    ) -> Reference:
        """Store a file; its reference. ``max_price`` is in wei per storage unit and epoch."""
        return await writing.put(
            self.ctx,
            path,
            k=k,
            n=n,
            days=days,
            max_price=max_price,
            name=name,
            progress=progress,
        )

    async def flush(self) -> bool:
        """Write the file index if it changed (True if it was written)."""
        return await self.ctx.index.flush()

    # ------------------------------------------------------------------ reading

    async def get(
        self,
        ref_or_grant: reading.Target,
        out_path: str | os.PathLike[str],
        *,
        progress: Progress | None = None,
    ) -> reading.GetResult:
        """Read a file (ours by reference, anyone's by a grant to us) to ``out_path`` (a file,
        or a directory to put it in under its stored name)."""
        return await reading.download(self.ctx, ref_or_grant, out_path, progress)

    async def ls(self, *, check: bool = False) -> list[FileEntry]:
        """The account's files; with ``check``, each file's shares are probed for health."""
        index = await self.ctx.index.current()
        entries = [self._entry(index.reference(e), e) for e in index.entries]
        if not check:
            return entries
        gate = asyncio.Semaphore(8)

        async def one(entry: FileEntry) -> FileEntry:
            async with gate:
                return await self._check(entry)

        checked = await asyncio.gather(*(one(e) for e in entries))
        for before, after in zip(index.entries, checked, strict=True):
            if after.healthy is not None and after.healthy != before.healthy_shares:
                self.ctx.index.put(replace(before, healthy_shares=min(after.healthy, 64)))
        return list(checked)

    @staticmethod
    def _entry(ref: Reference, e: IndexEntry) -> FileEntry:
        return FileEntry(ref, e.name, e.size, e.created_at, e.manifest_version, e.healthy_shares)

    async def _check(self, entry: FileEntry) -> FileEntry:
        try:
            opened = await reading.open_file(self.ctx, entry.reference)
        except NucluxError:
            return replace(entry, healthy=0, status="unreachable")
        layout = opened.body.layout
        if layout is None:
            known = await self.ctx.entry(entry.reference)
            total = len(known.locators) if known is not None else len(opened.manifest_leases)
            healthy, needed = len(opened.manifest_leases), 1
        else:
            total, needed = layout.n, layout.k
            last = layout.segment_count(opened.body.size) - 1
            sources = await reading.sources_for(self.ctx, opened)
            probes = await asyncio.gather(
                *(
                    asyncio.wait_for(
                        s.client.get(
                            s.lease_id,
                            block_object_id(entry.reference.file_id, s.share, last),
                            length=1,
                        ),
                        self.ctx.settings.request_timeout,
                    )
                    for s in sources
                ),
                return_exceptions=True,
            )
            healthy = sum(1 for p in probes if not isinstance(p, BaseException))
        status = "healthy" if healthy >= total else "degraded" if healthy >= needed else "lost"
        return replace(
            entry,
            version=opened.manifest.version,
            healthy=healthy,
            total=total,
            needed=needed,
            status=status,
        )

    # ------------------------------------------------------------------ removing and sharing

    async def rm(self, ref: Reference | str) -> RemoveResult:
        """Delete a file's shares and manifest copies and drop it from the index."""
        reference = parse_reference(ref) if isinstance(ref, str) else ref
        opened = await reading.open_file(self.ctx, reference)
        problems: list[str] = []
        deleted = 0
        layout = opened.body.layout
        jobs: list[tuple[int, list[bytes]]] = []
        if layout is not None:
            count = layout.segment_count(opened.body.size)
            for i, share in enumerate(layout.shares):
                _, client = await self.ctx.peers.client_for_lease(share.lease_id)
                done = await self.ctx.revisions.commit(
                    client, share.lease_id, remove=[(reference.file_id, i)]
                )
                if done.revision is None:  # no revisions yet: the blocks go one by one
                    ids = [block_object_id(reference.file_id, i, j) for j in range(count)]
                    jobs.append((share.lease_id, ids))
                else:
                    deleted += count
        entry = await self.ctx.entry(reference)
        homes = set(opened.manifest_leases) | set(entry.locators if entry else ())
        jobs += [(lid, [manifest_id(reference.file_id)]) for lid in sorted(homes)]
        for lease_id, ids in jobs:
            _, client = await self.ctx.peers.client_for_lease(lease_id)
            for oid in ids:
                try:
                    await client.delete(lease_id, oid)
                    deleted += 1
                except ObjectNotFound:
                    pass
                except PEER_ERRORS as err:
                    problems.append(f"lease {lease_id}: {err or type(err).__name__}")
                    break
            self.ctx.leases.forget_room(lease_id)
        self.ctx.index.remove(reference.file_id)
        return RemoveResult(reference, deleted, tuple(problems))

    async def share(self, ref: Reference | str, to_address: str, *, days: float) -> str:
        """A grant (text) letting ``to_address`` read the file for ``days``."""
        if not 0 < days <= MAX_GRANT_DAYS:
            raise UsageError(f"a grant lasts more than 0 and at most {MAX_GRANT_DAYS} days")
        reference = parse_reference(ref) if isinstance(ref, str) else ref
        to_key = await self.ctx.ledger.key_of(to_address)
        if to_key is None:
            raise UsageError(
                f"{to_address} has published no encryption key: they must run"
                " `nuclux keys publish` first"
            )
        opened = await reading.open_file(self.ctx, reference)
        leases = set(opened.manifest_leases)
        if opened.body.layout is not None:
            leases |= {s.lease_id for s in opened.body.layout.shares}
        now = await self.ctx.chain_now()
        grant = issue_grant(
            self.ctx.keys.eth_private_key,
            file_id=reference.file_id,
            grantee=to_address,
            grantee_x25519_public=to_key,
            file_key=opened.file_key,
            ephemeral_private=os.urandom(32),
            lease_ids=sorted(leases),
            manifest_version=opened.manifest.version,
            expires_at=now + int(days * 86_400),
            nonce=os.urandom(16),
        )
        return grant_to_text(grant)

    async def audit(self, ref: Reference | str) -> AuditReport:
        """Check every provider's share of a file off-chain (sampled blocks against roots)."""
        reference = parse_reference(ref) if isinstance(ref, str) else ref
        return await audit_file(self.ctx, reference)
