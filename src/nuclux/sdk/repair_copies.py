"""Repair of a packed file: its manifest copies (``storage-protocol.md`` §1: up to three
leases of the account on distinct providers) are its shares. A bad copy (missing, stale, on an
unreachable or draining provider, on a lease ending early) is replaced by writing the manifest,
held in memory since it was just read and checked, to a lease on another provider. The body
names no provider, so the manifest version stays; the index entry gets the new homes, and
stale or leaving copies on providers that still answer are deleted once the new ones exist."""

from __future__ import annotations

import dataclasses

from nuclux.sdk.context import StorageContext
from nuclux.sdk.reading import OpenedFile
from nuclux.sdk.repair_check import FileTerm
from nuclux.sdk.repair_common import (
    MovedShare,
    RepairReport,
    days_left,
    drop_old,
    record_entry,
)
from nuclux.sdk.settings import INLINE_COPIES, NotEnoughProviders
from nuclux.sdk.writing import OVERHEAD_BYTES, write_manifest


async def restore_copies(
    ctx: StorageContext,
    opened: OpenedFile,
    report: RepairReport,
    term: FileTerm,
    max_price: int | None,
) -> RepairReport:
    """Write the manifest (held in memory: it was just read) to new leases in place of the
    bad copies, up to ``INLINE_COPIES`` copies in all."""
    good = [c for c in report.shares if c.healthy]
    used = {c.provider.lower() for c in report.shares}
    want = max(1, INLINE_COPIES - len(good))
    probes = await ctx.leases.candidates(OVERHEAD_BYTES, max_price, exclude=used)
    if not probes:
        raise NotEnoughProviders(
            f"{opened.reference}: no other provider can take a copy of its manifest;"
            " nothing was paid"
        )
    count = min(want, len(probes))
    placed = await ctx.leases.ensure(probes, count, OVERHEAD_BYTES, days_left(ctx, term), max_price)
    written = await write_manifest(ctx, opened.manifest, placed)
    locators = [c.lease_id for c in good] + list(written)
    await record_entry(ctx, opened, opened.manifest.version, locators, len(locators))
    problems = await drop_old(
        ctx, opened, [(None, c.lease_id, c.reachable) for c in report.bad], set(locators)
    )
    by_lease = {p.lease_id: p for p in placed}
    moved = tuple(
        MovedShare(
            c.share,
            c.provider,
            c.lease_id,
            by_lease[lid].provider.owner,
            lid,
            True,
        )
        for c, lid in zip(report.bad, written, strict=False)
    )
    return dataclasses.replace(report, moved=moved, problems=tuple(problems))
