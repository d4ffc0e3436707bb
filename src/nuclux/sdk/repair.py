"""Repair (``storage-protocol.md`` §4, Repair): lost shares rebuilt onto new providers and a new
manifest version published; ``repair_all`` for every file of the index; ``watch`` in rounds.

Theory of operation
-------------------
A file is opened as its owner reads it (newest manifest, file key from its envelope), and each
share is judged (``repair_check``): audited, its provider not draining, its lease live and
long enough, not suspect on chain. Nothing bad: nothing is done (no transaction, no write).

A spread file needs ``k`` healthy shares, else ``NotEnoughShares`` and nothing changes. The
bad shares get new providers from ``LeaseBook.candidates`` excluding every provider the file
uses, leases reused or opened for the file's remaining term, and are rebuilt segment by
segment from ``k`` verified blocks
(``rebuild``). A rebuilt share must hash to the root the manifest already holds (the code is
deterministic). A share whose blocks failed while being read is rebuilt in a second pass.
Each new provider co-signs a revision adding its share; then version ``v + 1`` (``previous`` =
digest of ``v``, same file key, data id and envelopes) names the new share -> provider/lease
assignment and goes to the first ``manifest_copies(k, n)`` shares' leases; the index entry
follows (written by the next ``flush``) and the digest waits for the next anchor. Only then are
the old shares on providers that still answer dropped by a revision of their lease (and a
stale manifest copy there deleted): never before the new version is stored.

With fewer other providers than bad shares, as many shares as there are providers are rebuilt
(the lost ones, whose providers do not answer, before those that are only at risk) and the
rest are reported as not rebuilt (``RepairReport.unrepaired``; the CLI exits 1): a repair that
can raise a file from 5 to 7 of 8 healthy shares does so. With none, ``NotEnoughProviders``
before any money moves.

A packed file's copies are its manifest: bad copies are replaced by writing the same manifest
(its body names no provider, so no new version) to leases of other providers.

References name the owner and the file, never a version or a provider, so they work across a
repair; a grant made earlier reads from the leases it covers (any ``k`` healthy ones).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import Awaitable, Callable

from nuclux.core.erasure import Layout
from nuclux.core.manifest import (
    Manifest,
    ManifestBody,
    Share,
    check_successor,
    seal_manifest,
    spread_body,
)
from nuclux.core.merkle import leaf_count
from nuclux.core.reference import Reference
from nuclux.core.segment import SegmentCipher
from nuclux.core.spread import network_of
from nuclux.errors import NucluxError, UsageError
from nuclux.sdk import leftovers, reading
from nuclux.sdk.context import Pending, StorageContext
from nuclux.sdk.download import Source
from nuclux.sdk.leases import Placement
from nuclux.sdk.peers import PEER_ERRORS
from nuclux.sdk.rebuild import Rebuilt, rebuild_shares
from nuclux.sdk.repair_check import FileTerm, ShareCheck, check_shares
from nuclux.sdk.repair_common import (
    MovedShare,
    NotEnoughShares,
    OnRound,
    Outcome,
    RepairFailure,
    RepairReport,
    as_reference,
    days_left,
    drop_old,
    placement_of,
    record_entry,
)
from nuclux.sdk.repair_copies import restore_copies
from nuclux.sdk.settings import NotEnoughProviders, manifest_copies
from nuclux.sdk.writing import OVERHEAD_BYTES, replacement, write_manifest

REBUILD_PASSES = 3  # a share found bad while others are read is rebuilt in the next pass


async def repair_file(
    ctx: StorageContext,
    ref: Reference | str,
    *,
    max_price: int | None = None,
    fresh: bool = True,
) -> RepairReport:
    """Check one file and rebuild what is bad (see the module docstring). ``fresh``: read
    the registry and probe providers now (``repair_all`` does so once for all its files)."""
    reference = as_reference(ref)
    ctx.own(reference)
    if fresh:
        ctx.leases.invalidate()  # judge providers as they are now
        swept = await _sweep(ctx, reference.file_id)
    else:  # repair_all swept every file's first
        swept = ctx.swept.get(reference.file_id, 0)
    opened = await reading.open_file(ctx, reference)
    checks, term = await check_shares(ctx, opened, fresh=fresh)
    report = RepairReport(
        reference,
        opened.body.layout is None,
        opened.manifest.version,
        None,
        tuple(checks),
        swept=swept,
    )
    if report.nothing_to_do:
        return report
    if opened.body.layout is None:
        return await restore_copies(ctx, opened, report, term, max_price)
    return await _repair_spread(ctx, opened, report, term, max_price)


# ---------------------------------------------------------------------------- spread files


async def _repair_spread(
    ctx: StorageContext,
    opened: reading.OpenedFile,
    report: RepairReport,
    term: FileTerm,
    max_price: int | None,
) -> RepairReport:
    layout = opened.body.layout
    if layout is None:  # pragma: no cover - the caller checked
        raise NucluxError("not a spread file")
    checks = {c.share: c for c in report.shares}
    bad = {c.share for c in report.bad}
    if layout.n - len(bad) < layout.k:
        found = "; ".join(f"share {c.share} ({c.provider}): {c.reason}" for c in report.bad)
        raise NotEnoughShares(
            f"{opened.reference}: only {layout.n - len(bad)} of its {layout.n} shares are"
            f" healthy and {layout.k} are needed to rebuild the others ({found});"
            " nothing was changed"
        )
    code = Layout(layout.k, layout.n, layout.block_bytes)
    size = opened.body.size
    need = code.share_size(size) + OVERHEAD_BYTES
    days = days_left(ctx, term)
    used = {s.provider.lower() for s in layout.shares}
    sources = await reading.sources_for(ctx, opened)
    keep = [await placement_of(ctx, s.provider, s.lease_id) for s in layout.shares]
    moved: dict[int, Placement] = {}
    todo = set(bad)
    problems: list[str] = []
    # with too few other providers for every bad share, the lost ones go first
    rank = {c.share: (c.reachable, c.share) for c in report.shares}
    for attempt in range(REBUILD_PASSES):
        try:
            rebuilt, waiting = await _rebuild_pass(
                ctx, opened, code, sources, keep, todo, used, need, days, max_price, rank
            )
        except (NucluxError, *PEER_ERRORS) as err:
            if attempt == 0:
                raise  # nothing was rebuilt: nothing to publish
            problems.append(f"shares {sorted(todo)} not rebuilt: {err or type(err).__name__}")
            break  # publish what the first passes rebuilt
        if waiting:
            problems.append(
                f"shares {waiting} not rebuilt: no other provider can take them now"
                f" (with {need} bytes free); nothing was paid for them"
            )
        moved.update(rebuilt.placements)
        keep = [moved.get(i, p) for i, p in enumerate(keep)]
        extra: dict[int, str] = {}
        for fault in rebuilt.faults:
            if fault.share not in moved:
                extra.setdefault(fault.share, f"failed while rebuilding: {fault.reason}")
        for i, why in extra.items():
            old = checks[i]
            checks[i] = dataclasses.replace(old, problems=(*old.problems, why))
        alive = [s for s in sources if s.dead is None and s.share not in extra]
        todo = set(extra)
        if not todo or len(alive) < layout.k:
            break
    shares = tuple(checks[i] for i in sorted(checks))
    report = dataclasses.replace(report, shares=shares, problems=tuple(problems))
    return await _publish(ctx, opened, report, keep, moved)


async def _rebuild_pass(
    ctx: StorageContext,
    opened: reading.OpenedFile,
    code: Layout,
    sources: list[Source],
    keep: list[Placement],
    todo: set[int],
    used: set[str],
    need: int,
    days: float,
    max_price: int | None,
    rank: dict[int, tuple[bool, int]],
) -> tuple[Rebuilt, list[int]]:
    """Rebuild the shares of ``todo`` that other providers can take, most urgent first (by
    ``rank``); returns what was rebuilt and the shares still waiting for a provider."""
    layout = opened.body.layout
    if layout is None:  # pragma: no cover
        raise NucluxError("not a spread file")
    for i in todo:
        if sources[i].dead is None:
            sources[i].dead = "being rebuilt"
    # new providers in networks the healthy shares do not use yet come first
    networks = {network_of(p.provider.endpoint) for i, p in enumerate(keep) if i not in todo}
    probes = await ctx.leases.candidates(need, max_price, exclude=used, avoid=networks)
    if not probes:
        raise NotEnoughProviders(
            f"{opened.reference}: {len(todo)} shares need new providers with {need} bytes"
            " free and no other provider can take them; nothing was paid"
        )
    order = sorted(todo, key=rank.__getitem__)
    now, waiting = order[: len(probes)], sorted(order[len(probes) :])
    placed = await ctx.leases.ensure(probes, len(now), need, days, max_price, networks)
    targets = dict(zip(sorted(now), placed, strict=True))
    used |= {p.provider.owner.lower() for p in placed}
    failed: set[str] = set()

    async def replace(share: int, old: Placement, reason: str) -> Placement:
        return await replacement(
            ctx,
            share,
            old,
            reason,
            in_use=used,
            failed=failed,
            need=need,
            days=days,
            max_price=max_price,
        )

    try:
        rebuilt = await rebuild_shares(
            layout=code,
            size=opened.body.size,
            cipher=SegmentCipher(opened.file_key, layout.data_id),
            file_id=opened.reference.file_id,
            sources=sources,
            targets=targets,
            expected={i: layout.shares[i].root for i in targets},
            keep=keep,
            replace=replace,
            settings=ctx.settings,
            executor=ctx.executor,
        )
    except BaseException:
        for p in placed:  # what was promised there was not all used: read it again
            ctx.leases.forget_room(p.lease_id)
        raise
    return rebuilt, waiting


async def _publish(
    ctx: StorageContext,
    opened: reading.OpenedFile,
    report: RepairReport,
    keep: list[Placement],
    moved: dict[int, Placement],
) -> RepairReport:
    """Revisions for the new shares, the new manifest version, the index; then the old
    shares on providers that still answer are dropped."""
    layout = opened.body.layout
    if layout is None:  # pragma: no cover
        raise NucluxError("not a spread file")
    fid = opened.reference.file_id
    share_size = Layout(layout.k, layout.n, layout.block_bytes).share_size(opened.body.size)
    entry_of = {i: (layout.shares[i].root, leaf_count(share_size), share_size) for i in moved}
    commits = await asyncio.gather(
        *(
            ctx.revisions.commit(p.client, p.lease_id, add=[(fid, i, entry_of[i])])
            for i, p in moved.items()
        )
    )
    for p, done in zip(moved.values(), commits, strict=True):
        if done.error is not None:
            ctx.warnings.append(
                f"provider {p.provider.owner} did not co-sign lease {p.lease_id}'s revision"
                f" (kept for the next one): {done.error}"
            )
    shares = [
        Share(p.provider.owner, p.lease_id, layout.shares[i].root) for i, p in enumerate(keep)
    ]
    body = spread_body(
        opened.body.size,
        data_id=layout.data_id,
        block_bytes=layout.block_bytes,
        k=layout.k,
        shares=shares,
        name=opened.body.name,
        media_type=opened.body.media_type,
    )
    manifest = _successor(ctx, opened, body)
    homes = keep[: manifest_copies(layout.k, layout.n)]
    locators = await write_manifest(ctx, manifest, homes)
    ctx.digests.append(
        Pending(opened.reference, manifest.version, manifest.digest, tuple(locators))
    )
    still_bad = sum(1 for c in report.bad if c.share not in moved)
    await record_entry(ctx, opened, manifest.version, locators, layout.n - still_bad)
    old = {i: layout.shares[i] for i in moved}
    problems = await drop_old(
        ctx,
        opened,
        [(c.share, old[c.share].lease_id, c.reachable) for c in report.shares if c.share in old],
        set(locators),
    )
    out = tuple(
        MovedShare(
            i,
            old[i].provider,
            old[i].lease_id,
            p.provider.owner,
            p.lease_id,
            done.revision is not None,
        )
        for (i, p), done in zip(moved.items(), commits, strict=True)
    )
    return dataclasses.replace(
        report, new_version=manifest.version, moved=out, problems=(*report.problems, *problems)
    )


async def _sweep(ctx: StorageContext, file_id: bytes | None) -> int:
    """Sweep leftovers (of one file, or all); counts what was removed per file into
    ``ctx.swept`` and warns of what still waits. Returns the count for ``file_id``."""
    report = await leftovers.sweep(ctx, file_id=file_id)
    for item in report.removed:
        ctx.swept[item.file_id] = ctx.swept.get(item.file_id, 0) + 1
    for item, why in report.waiting:
        ctx.warnings.append(
            f"lease {item.lease_id} still holds data of a removed or moved share of file"
            f" {item.file_id.hex()} (since {time.strftime('%Y-%m-%d', time.gmtime(item.since))}):"
            f" {why}; the next repair tries again"
        )
    return sum(1 for item in report.removed if item.file_id == file_id)


def _successor(ctx: StorageContext, opened: reading.OpenedFile, body: ManifestBody) -> Manifest:
    previous = opened.manifest
    manifest = seal_manifest(
        ctx.keys.eth_private_key,
        file_id=previous.file_id,
        version=previous.version + 1,
        created_at=int(time.time()),
        previous=previous.digest,
        envelopes=previous.envelopes,  # the owner's, and any added since
        body=body,
        file_key=opened.file_key,
        body_nonce=os.urandom(12),
    )
    check_successor(previous, manifest)
    return manifest


# ---------------------------------------------------------------------------- many files


async def repair_all(ctx: StorageContext, *, max_price: int | None = None) -> list[Outcome]:
    """Every file of the index, one after the other; a file that cannot be repaired is a
    ``RepairFailure`` and the others go on."""
    index = await ctx.index.current()
    ctx.leases.invalidate()
    await ctx.peers.registry(max_age=0)  # read once now; the files' checks reuse it
    ctx.swept.clear()
    await _sweep(ctx, None)  # leftovers of earlier repairs and of removed files
    out: list[Outcome] = []
    for entry in index.entries:
        out.append(await _attempt(ctx, index.reference(entry), max_price, fresh=False))
    return out


async def _attempt(
    ctx: StorageContext, reference: Reference, max_price: int | None, *, fresh: bool = True
) -> Outcome:
    try:
        return await repair_file(ctx, reference, max_price=max_price, fresh=fresh)
    except NucluxError as err:
        return RepairFailure(reference, str(err), err.exit_code)
    except PEER_ERRORS as err:
        return RepairFailure(reference, str(err) or type(err).__name__)


async def watch(
    ctx: StorageContext,
    *,
    flush: Callable[[], Awaitable[object]],
    interval: float,
    reference: Reference | None = None,
    rounds: int | None = None,
    stop: asyncio.Event | None = None,
    on_round: OnRound | None = None,
    renew: Callable[[], Awaitable[object]] | None = None,
    max_price: int | None = None,
) -> int:
    """Repair in rounds (every file of the index, or ``reference`` only), ``flush`` after
    each, ``interval`` seconds apart, until ``stop`` is set or ``rounds`` are done; the rounds
    run. A round that fails as a whole (the chain or the index unreachable) is reported as a
    ``RepairFailure`` without a reference, and the next round tries again."""
    if not interval >= 0:
        raise UsageError(f"the interval is a number of seconds >= 0, not {interval}")
    if rounds is not None and rounds < 1:
        raise UsageError("at least one round")
    stop = stop or asyncio.Event()
    done = 0
    while not stop.is_set():
        try:
            if renew is not None:
                # lease renewal goes first: a lease it extends is then no longer "ending"
                await renew()
            if reference is not None:
                outcomes = [await _attempt(ctx, reference, max_price)]
            else:
                outcomes = await repair_all(ctx, max_price=max_price)
            await flush()
        except (NucluxError, *PEER_ERRORS) as err:
            code = err.exit_code if isinstance(err, NucluxError) else 1
            outcomes = [RepairFailure(None, str(err) or type(err).__name__, code)]
        done += 1
        if on_round is not None:
            on_round(done, outcomes)
        if rounds is not None and done >= rounds:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
    return done


__all__ = [
    "MovedShare",
    "NotEnoughShares",
    "OnRound",
    "Outcome",
    "RepairFailure",
    "RepairReport",
    "ShareCheck",
    "as_reference",
    "repair_all",
    "repair_file",
    "watch",
]
