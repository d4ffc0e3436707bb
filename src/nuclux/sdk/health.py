"""File health for ``ls``: how many of a file's shares (packed: manifest copies) answer, and
when the first lease holding it ends.

A check opens the file's newest manifest, asks each share's provider for one byte of the
share's last block (a provider that lost the share or is down fails it) and reads the end of
every lease holding the file from the chain. Healthy: all answered; degraded: at least k;
lost: fewer. A file is *at risk* when it is not healthy or a lease ends within ``risk_days``
(it needs renewal or repair); ``risk`` says why. The shares counted are written back to the
index entry.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase

from nuclux.core.file_index import IndexEntry
from nuclux.core.lease import Lease
from nuclux.core.reference import Reference
from nuclux.errors import NucluxError
from nuclux.sdk import reading
from nuclux.sdk.context import StorageContext
from nuclux.sdk.nodeapi import block_object_id


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
    expires_at: int | None = None  # chain time the first lease holding it ends (checked)
    at_risk: bool = False  # degraded, lost, unreachable, or a lease ends within risk_days
    risk: str | None = None  # why it is at risk, e.g. "lease 12 ends in 2.1 days"


async def list_files(
    ctx: StorageContext, *, check: bool, match: str | None = None
) -> list[FileEntry]:
    """The files of the index (those whose stored name matches the shell-style pattern
    ``match``, if given), each checked with ``check``."""
    index = await ctx.index.current()
    chosen = [e for e in index.entries if match is None or fnmatchcase(e.name, match)]
    entries = [_entry(index.reference(e), e) for e in chosen]
    if not check:
        return entries
    gate = asyncio.Semaphore(8)
    ends = LeaseEnds(ctx)
    now = await ctx.chain_now()  # one reading of the chain's clock for the whole listing

    async def one(entry: FileEntry) -> FileEntry:
        async with gate:
            return await _check(ctx, entry, ends, now)

    checked = await asyncio.gather(*(one(e) for e in entries))
    for before, after in zip(chosen, checked, strict=True):
        if after.healthy is not None and after.healthy != before.healthy_shares:
            ctx.index.put(replace(before, healthy_shares=min(after.healthy, 64)))
    return list(checked)


def _entry(ref: Reference, e: IndexEntry) -> FileEntry:
    return FileEntry(ref, e.name, e.size, e.created_at, e.manifest_version, e.healthy_shares)


async def _check(ctx: StorageContext, entry: FileEntry, ends: LeaseEnds, now: int) -> FileEntry:
    try:
        opened = await reading.open_file(ctx, entry.reference, narrow=True)
    except NucluxError:
        why = "its manifest cannot be read"
        return replace(entry, healthy=0, status="unreachable", at_risk=True, risk=why)
    layout = opened.body.layout
    if layout is None:
        known = await ctx.entry(entry.reference)
        total = len(known.locators) if known is not None else len(opened.manifest_leases)
        healthy, needed = len(opened.manifest_leases), 1
    else:
        total, needed = layout.n, layout.k
        last = layout.segment_count(opened.body.size) - 1
        sources = await reading.sources_for(ctx, opened)
        probes = await asyncio.gather(
            *(
                asyncio.wait_for(
                    s.client.get(
                        s.lease_id,
                        block_object_id(entry.reference.file_id, s.share, last),
                        length=1,
                    ),
                    ctx.settings.request_timeout,
                )
                for s in sources
            ),
            return_exceptions=True,
        )
        healthy = sum(1 for p in probes if not isinstance(p, BaseException))
    status = "healthy" if healthy >= total else "degraded" if healthy >= needed else "lost"
    leases = set(opened.manifest_leases)
    if layout is not None:
        leases |= {s.lease_id for s in layout.shares}
    expires = await ends.first(leases)
    what = "copies" if layout is None else "shares"
    reasons = [] if status == "healthy" else [f"only {healthy} of {total} {what} answer"]
    if expires is not None and expires <= now + int(ctx.settings.risk_days * 86_400):
        reasons.append(f"a lease ends in {_span(expires - now)}")
    return replace(
        entry,
        version=opened.manifest.version,
        healthy=healthy,
        total=total,
        needed=needed,
        status=status,
        expires_at=expires,
        at_risk=bool(reasons),
        risk="; ".join(reasons) or None,
    )


class LeaseEnds:
    """When leases end, read from the chain once per lease for a whole listing (the files of
    an account share a handful of leases)."""

    def __init__(self, ctx: StorageContext) -> None:
        self._ctx = ctx
        self._reads: dict[int, asyncio.Task[Lease]] = {}

    async def first(self, lease_ids: set[int]) -> int | None:
        """When the first of these leases ends (chain time); those unreadable are left out."""
        for lid in lease_ids - self._reads.keys():
            self._reads[lid] = asyncio.ensure_future(self._ctx.peers.lease(lid, fresh=True))
        got = await asyncio.gather(*(self._reads[lid] for lid in lease_ids), return_exceptions=True)
        ends = [x.end_epoch for x in got if not isinstance(x, BaseException)]
        length = self._ctx.ledger.deployment.params.epoch_length
        return min(ends) * length if ends else None


def _span(seconds: int) -> str:
    """A time left, as a person reads it: "2.1 days", "5.0 hours", "12 minutes"."""
    if seconds >= 86_400:
        return f"{seconds / 86_400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{max(0, seconds) // 60} minutes"
