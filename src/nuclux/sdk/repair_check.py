"""Which of a file's shares (packed: manifest copies) are healthy, and why the others are not.

Theory of operation
-------------------
Repair rebuilds what a share's holder can no longer be trusted to keep. A share is judged by
four things, each read without a transaction:

* the off-chain audit (``nuclux.sdk.audit``): its provider answers, its block roots hash to
  the share root of the manifest (so no block is missing), and sampled blocks match their
  roots: verdicts unreachable, missing, corrupt, stale;
* its provider: draining (``GET /v1/info`` says so, or the registry has it paused or leaving)
  still serves its shares but takes no new lease and will leave, so its shares move while it
  still serves them;
* its lease: no longer live (closing, closed, failed), or ending within ``risk_days`` and
  before the file's term, taken as the latest end among the file's live leases less the
  ``term_slack`` that placing a file allows. No term is stored with a file, and leases are
  shared by files, so a lease that merely ends earlier than another is left alone until its
  end is near: by then a renewal (which runs first in a watch round) has extended it, or it
  was not renewed while the file's other leases last longer, and its share moves;
* the chain: a share the storage module marked suspect (a missed demanded proof) in the
  lease's latest revision on chain.

A share failing any of these is bad; the reasons are kept for the report.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from nuclux.core.lease import Lease, LeaseState
from nuclux.sdk.audit import audit_opened
from nuclux.sdk.context import StorageContext
from nuclux.sdk.peers import PEER_ERRORS, Probe
from nuclux.sdk.reading import OpenedFile

LIVE = (LeaseState.ACTIVE, LeaseState.ACTIVE_TICKETED)
DRAINING_STATUSES = ("paused", "leaving")


@dataclass(frozen=True, slots=True)
class ShareCheck:
    """One share (packed: one manifest copy) of a file and what was found wrong with it."""

    share: int
    provider: str
    lease_id: int
    problems: tuple[str, ...] = ()
    reachable: bool = True  # its provider answered (old data there can be removed)

    @property
    def healthy(self) -> bool:
        return not self.problems

    @property
    def reason(self) -> str:
        return "; ".join(self.problems) if self.problems else "ok"


@dataclass(frozen=True, slots=True)
class FileTerm:
    """The epoch now and the epoch the file is paid until (its latest live lease's end)."""

    epoch: int
    end_epoch: int


async def check_shares(
    ctx: StorageContext, opened: OpenedFile, *, fresh: bool = True
) -> tuple[list[ShareCheck], FileTerm]:
    """Every share (or copy) of the file with its problems, and the file's term; ``fresh``
    reads the registry now, else a copy up to ``directory_ttl`` old will do."""
    audit = await audit_opened(ctx, opened)
    rows = [(s.share, s.provider, s.lease_id) for s in audit.shares]
    problems: dict[int, list[str]] = {i: [] for i, _, _ in rows}
    reachable = {i: True for i, _, _ in rows}
    for s in audit.shares:
        if s.status != "ok":
            problems[s.share].append(f"{s.status}: {s.detail}" if s.detail else s.status)
            reachable[s.share] = s.status != "unreachable"
    draining = await _draining(ctx, {p for _, p, _ in rows if p != "?"}, fresh)
    for i, provider, _ in rows:
        if provider.lower() in draining:
            problems[i].append(f"draining: {draining[provider.lower()]}")
    leases = await _leases(ctx, {lid for _, _, lid in rows})
    epoch = await ctx.ledger.epoch()
    live_ends = [x.end_epoch for x in leases.values() if x.state in LIVE]
    end = max(live_ends, default=epoch)
    shortest = end - max(1, int(ctx.settings.term_slack * max(0, end - epoch)))
    length = ctx.ledger.deployment.params.epoch_length
    horizon = epoch + math.ceil(ctx.settings.risk_days * 86_400 / length)
    for i, _, lid in rows:
        lease = leases.get(lid)
        if lease is None:
            problems[i].append(f"lease {lid} could not be read from the chain")
        elif lease.state not in LIVE:
            problems[i].append(f"lease {lid} is {lease.state.label}")
        elif lease.end_epoch < shortest and lease.end_epoch <= horizon:
            problems[i].append(
                f"lease {lid} ends at epoch {lease.end_epoch}, before the file's term (epoch {end})"
            )
    if not audit.packed:
        fid = opened.reference.file_id
        flagged = await asyncio.gather(
            *(_suspect(ctx, fid, i, lid) for i, _, lid in rows if not problems[i])
        )
        for i, why in flagged:
            if why is not None:
                problems[i].append(why)
    checks = [
        ShareCheck(i, provider, lid, tuple(problems[i]), reachable[i]) for i, provider, lid in rows
    ]
    return checks, FileTerm(epoch, end)


async def _draining(ctx: StorageContext, providers: set[str], fresh: bool) -> dict[str, str]:
    """The providers among ``providers`` that are leaving (lowercase address -> why)."""
    age = 0.0 if fresh else ctx.settings.directory_ttl
    registry = {p.owner.lower(): p for p in await ctx.peers.registry(max_age=age)}
    out: dict[str, str] = {}
    asked: list[str] = []
    for address in providers:
        info = registry.get(address.lower())
        if info is None:
            continue
        if info.status in DRAINING_STATUSES:
            out[address.lower()] = f"the registry has it {info.status}"
        else:
            asked.append(address.lower())
    probes: list[Probe] = await asyncio.gather(
        *(ctx.peers.probe(registry[a], ctx.settings.probe_timeout) for a in asked)
    )
    for address, probe in zip(asked, probes, strict=True):
        if probe.reachable and probe.draining:
            out[address] = "its node says it is draining"
    return out


async def _leases(ctx: StorageContext, ids: set[int]) -> dict[int, Lease]:
    ordered = sorted(ids)
    got = await asyncio.gather(
        *(ctx.peers.lease(lid, fresh=True) for lid in ordered), return_exceptions=True
    )
    return {
        lid: lease
        for lid, lease in zip(ordered, got, strict=True)
        if not isinstance(lease, BaseException)
    }


async def _suspect(
    ctx: StorageContext, file_id: bytes, share: int, lease_id: int
) -> tuple[int, str | None]:
    """Whether the storage module marked this share suspect in the lease's revision on
    chain. The share's position in that revision comes from the provider's latest revision
    when it is the one on chain (else nothing can be said, and nothing is claimed)."""
    try:
        book = await ctx.ledger.storage_book(lease_id)
        if book.revision == 0:
            return share, None
        _, client = await ctx.peers.client_for_lease(lease_id)
        latest = await asyncio.wait_for(
            client.latest_revision(lease_id), ctx.settings.request_timeout
        )
        if latest is None or latest.revision != book.revision:
            return share, None
        position = latest.shares.index((file_id, share))
    except ValueError:  # the revision on chain does not list this share
        return share, None
    except PEER_ERRORS:
        return share, None  # judged by the audit, not here
    if await ctx.ledger.is_suspect(lease_id, book.revision, position):
        return share, f"suspect on chain (a missed proof, lease {lease_id} rev {book.revision})"
    return share, None
