"""``StorageClient``: the consumer's storage API (put, get, ls, rm, share, audit, repair).

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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType

from nuclux.chain import Ledger
from nuclux.core.grant import grant_to_text, issue_grant
from nuclux.core.reference import Reference, parse_block_id, parse_reference
from nuclux.errors import NucluxError, ObjectNotFound, UsageError
from nuclux.keys.derive import AccountKeys
from nuclux.sdk import health, reading, renewal, timestamps, writing
from nuclux.sdk import repair as repairing
from nuclux.sdk.audit import AuditReport, audit_file
from nuclux.sdk.context import StorageContext
from nuclux.sdk.health import FileEntry
from nuclux.sdk.leftover_record import Leftover
from nuclux.sdk.nodeapi import block_object_id, manifest_id
from nuclux.sdk.peers import PEER_ERRORS
from nuclux.sdk.settings import Progress, StorageSettings, manifest_copies

MAX_GRANT_DAYS = 3650


@dataclass(frozen=True, slots=True)
class FlushResult:
    index_written: bool
    anchored: timestamps.Anchored | None


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

    async def flush(self) -> FlushResult:
        """Write the file index if it changed, then time-stamp the manifests written since
        the last flush (one transaction). A failed anchor is a warning (``warnings``): the
        files are stored, and their manifests wait for the next flush."""
        lost = await self.ctx.behind.settle()
        for reference, _ in lost:
            self.ctx.index.remove(reference.file_id)
        gone = {reference for reference, _ in lost}
        written = await self.ctx.index.flush()
        anchored = None
        pending = [p for p in self.ctx.digests if p.reference not in gone]
        self.ctx.digests = []
        if pending and self.ctx.settings.timestamps:
            try:
                anchored = await timestamps.anchor(self.ctx, pending)
            except NucluxError as err:
                self.ctx.digests[:0] = pending
                self.ctx.warnings.append(f"time-stamps not anchored (kept for later): {err}")
            else:
                if anchored is not None:
                    self.ctx.warnings.extend(anchored.problems)
        if lost:
            why = "; ".join(f"{ref}: {reason}" for ref, reason in lost[:5])
            raise NucluxError(f"{len(lost)} of the files put could not be stored ({why})")
        return FlushResult(written, anchored)

    @property
    def warnings(self) -> list[str]:
        """Problems that did not fail an operation (a proof not stored, an anchor delayed)."""
        return self.ctx.warnings

    async def verify_timestamp(
        self, path: str | os.PathLike[str], ref_or_grant: reading.Target
    ) -> timestamps.Timestamp:
        """Check that ``path`` is the file the reference (or grant) names and when its
        manifest was anchored on chain."""
        return await timestamps.verify(self.ctx, path, ref_or_grant)

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

    async def ls(self, *, check: bool = False, match: str | None = None) -> list[FileEntry]:
        """The account's files (with ``match``, those whose name matches that shell-style
        pattern: ``*``, ``?``, ``[...]``); with ``check``, each file's shares are probed."""
        return await health.list_files(self.ctx, check=check, match=match)

    async def renew(
        self, *, days: float | None = None, max_spend: int | None = None, dry_run: bool = False
    ) -> renewal.RenewalReport:
        """Extend our leases holding data that end within the renewal window, soonest first,
        by ``days`` (default ``default_days``) each, within the spending cap: ``max_spend``
        (wei, this call) and the settings' running ``renew_budget``; with neither, nothing is
        renewed. See ``nuclux.sdk.renewal``."""
        return await renewal.renew(self.ctx, days=days, max_spend=max_spend, dry_run=dry_run)

    # ------------------------------------------------------------------ removing and sharing

    async def rm(self, ref: Reference | str) -> RemoveResult:
        """Delete a file from its providers (its shares through each lease's next revision,
        its manifest copies and time-stamp proofs) and drop it from the index."""
        reference = parse_reference(ref) if isinstance(ref, str) else ref
        opened = await reading.open_file(self.ctx, reference)
        fid = reference.file_id
        layout = opened.body.layout
        entry = await self.ctx.entry(reference)
        homes = set(opened.manifest_leases) | set(entry.locators if entry else ())
        jobs: list[tuple[int, list[bytes]]] = []
        shares: list[tuple[int, int]] = []  # (share, lease)
        if layout is not None:
            shares = [(i, s.lease_id) for i, s in enumerate(layout.shares)]
            homes |= {s.lease_id for s in layout.shares[: manifest_copies(layout.k, layout.n)]}
        count = layout.segment_count(opened.body.size) if layout is not None else 0
        commits = await asyncio.gather(*(self._remove_share(fid, i, lid) for i, lid in shares))
        for (i, lid), revised in zip(shares, commits, strict=True):
            if not revised:  # not co-signed: its blocks go one by one, and a later repair
                # drops the share from the lease (``nuclux.sdk.leftovers``)
                self.ctx.leftovers.add(Leftover(lid, fid, (i,)))
                jobs.append((lid, [block_object_id(fid, i, j) for j in range(count)]))
        versions = range(1, opened.manifest.version + 1)
        per_copy = [manifest_id(fid)] + [timestamps.proof_object_id(fid, v) for v in versions]
        jobs += [(lid, per_copy) for lid in sorted(homes)]
        outcomes = await asyncio.gather(*(self._delete(lid, ids) for lid, ids in jobs))
        for (lid, _), (_, todo, _) in zip(jobs, outcomes, strict=True):
            left = tuple(oid for oid in todo if parse_block_id(oid) is None)  # blocks: shares
            if left:
                self.ctx.leftovers.add(Leftover(lid, fid, objects=left))
        deleted = count * sum(commits) + sum(d for d, _, _ in outcomes)  # revisions drop blocks
        self.ctx.digests = [p for p in self.ctx.digests if p.reference != reference]
        self.ctx.index.remove(fid)
        problems = tuple(dict.fromkeys(p for _, _, p in outcomes if p is not None))
        return RemoveResult(reference, deleted, problems)

    async def _remove_share(self, file_id: bytes, share: int, lease_id: int) -> bool:
        """Drop a share through the lease's next revision; False if it was not co-signed."""
        _, client = await self.ctx.peers.client_for_lease(lease_id)
        done = await self.ctx.revisions.commit(client, lease_id, remove=[(file_id, share)])
        self.ctx.leases.forget_room(lease_id)
        return done.revision is not None

    async def _delete(self, lease_id: int, ids: list[bytes]) -> tuple[int, list[bytes], str | None]:
        """Delete objects one by one (absent ones are fine); (deleted, the ids not done,
        problem)."""
        deleted = done = 0
        try:
            _, client = await self.ctx.peers.client_for_lease(lease_id)
            for oid in ids:
                try:
                    await client.delete(lease_id, oid)
                    deleted += 1
                except ObjectNotFound:
                    pass
                done += 1
        except PEER_ERRORS as err:
            return deleted, ids[done:], f"lease {lease_id}: {err or type(err).__name__}"
        finally:
            self.ctx.leases.forget_room(lease_id)
        return deleted, [], None

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

    # ------------------------------------------------------------------ repair

    async def repair(
        self, ref: Reference | str, *, max_price: int | None = None
    ) -> repairing.RepairReport:
        """Check a file's shares and rebuild the bad ones (unreachable, missing or corrupt
        blocks, draining provider, lease ending early, suspect on chain) onto new providers,
        publishing a new manifest version; a report says what was found and done.
        ``NotEnoughShares`` (``nuclux.sdk.repair``) if fewer than k shares are healthy:
        nothing changes then."""
        return await repairing.repair_file(self.ctx, ref, max_price=max_price)

    async def repair_all(self, *, max_price: int | None = None) -> list[repairing.Outcome]:
        """``repair`` for every file of the index; a file that fails does not stop the rest."""
        return await repairing.repair_all(self.ctx, max_price=max_price)

    async def repair_watch(
        self,
        *,
        interval: float = 600.0,
        ref: Reference | str | None = None,
        rounds: int | None = None,
        stop: asyncio.Event | None = None,
        on_round: repairing.OnRound | None = None,
        max_price: int | None = None,
        renew: Callable[[], Awaitable[object]] | None = None,
    ) -> int:
        """Repair every file (or ``ref``) in rounds ``interval`` seconds apart, flushing after
        each, until ``stop`` is set or ``rounds`` are done; returns the rounds run. ``renew``
        (e.g. ``lambda: client.renew()``) runs first in each round: a lease it extends is then
        not judged as ending."""
        reference = None if ref is None else repairing.as_reference(ref)
        return await repairing.watch(
            self.ctx,
            flush=self.flush,
            interval=interval,
            reference=reference,
            rounds=rounds,
            stop=stop,
            on_round=on_round,
            renew=renew,  # lease renewal (extending the incumbents) goes first
            max_price=max_price,
        )
