"""Renewal: extending the incumbent's storage leases before they end, within a spending cap.

Theory of operation
-------------------
A storage lease holds every share, manifest copy and index copy the account keeps on its
provider, so renewal works on leases, not files. ``renew`` reads the account's live storage
leases from the chain and takes those ending within the renewal window
(``StorageSettings.renew_window``: ``renew_days``, else ``risk_days``, the window in which
``ls`` calls a file at risk). Each is extended (``LeaseBook.extend``, the transaction a put uses
to lengthen a term) by ``days`` (default ``default_days``, which must be longer than the
window so that a renewed lease leaves it) at the lease's own price: cost = price x units x
epochs, added to its escrow, and the provider must accept. No auction: the incumbent keeps
the data.

Renewed: leases whose provider reports data stored (used bytes > 0); an empty lease is left
to end. Not renewed, each with its reason: a lease whose provider is draining (paused or
leaving), suspended or unreachable (repair moves its data to new providers), one whose
extension still waits for the provider, and whatever does not fit the cap.

The cap is on escrow committed. ``max_spend`` (wei) bounds one call; ``renew_budget`` is a
running budget, the most renewals may ever commit, counted in the ``renew_record`` file
(``nuclux.sdk.spending``) across calls and processes. A call may commit
min(max_spend, renew_budget - spent). With neither set nothing is renewed: an unattended
caller (the repair watcher) never spends without a cap the user chose. Leases go soonest-ending
first; one that does not fit what is left is skipped, its files named at risk, and a later,
cheaper one may still fit.

Spending is recorded before its transaction is sent (a crash never undercounts) and given
back when the transaction fails or the provider declines. An extension not answered within
``accept_timeout`` is reported pending and stays counted: its escrow is committed until the
provider accepts, or until its deadline passes and it is refunded.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from nuclux.chain.ledger import ProviderInfo
from nuclux.core.lease import Lease, LeaseState
from nuclux.core.reference import Reference
from nuclux.core.types import Wei, format_nux
from nuclux.errors import NucluxError, UsageError
from nuclux.sdk import reading
from nuclux.sdk.context import StorageContext
from nuclux.sdk.peers import PEER_ERRORS
from nuclux.sdk.spending import SpendRecord

DAY = 86_400


@dataclass(frozen=True, slots=True)
class Renewal:
    """A lease extended (or, on a dry run, that would be). Times are chain time (seconds)."""

    lease_id: int
    provider: str
    old_end: int
    new_end: int
    epochs: int
    cost: Wei
    status: str  # renewed; pending (the provider has not accepted yet); planned (dry run)


@dataclass(frozen=True, slots=True)
class Skipped:
    """A lease ending within the window that was not renewed, and why."""

    lease_id: int
    provider: str
    ends_at: int
    reason: str
    at_risk: bool = True  # it holds data that is lost when it ends, unless repair moves it
    cost: Wei | None = None  # what renewing it would have cost, where it got that far
    files: tuple[Reference, ...] = ()  # files with data on it (only for those at risk)


@dataclass(frozen=True, slots=True)
class RenewalReport:
    renewed: tuple[Renewal, ...]
    skipped: tuple[Skipped, ...]
    spent: Wei  # committed by this call (a dry run: what it would commit)
    allowance: Wei | None  # what this call could commit; None: no cap was set
    budget: Wei | None  # renew_budget
    budget_spent: Wei  # recorded against renew_budget, this call included
    window_days: float
    days: float
    dry_run: bool

    @property
    def at_risk(self) -> tuple[Skipped, ...]:
        """Leases holding data that end within the window and were not renewed."""
        return tuple(s for s in self.skipped if s.at_risk)

    @property
    def files_at_risk(self) -> tuple[Reference, ...]:
        return tuple(sorted({f for s in self.at_risk for f in s.files}, key=str))


class RenewalIncomplete(NucluxError):
    """Some lease holding data ends within the renewal window and was not renewed."""


async def renew(
    ctx: StorageContext,
    *,
    days: float | None = None,
    max_spend: int | None = None,
    dry_run: bool = False,
) -> RenewalReport:
    """Extend our storage leases that hold data and end within the renewal window, soonest
    first, by ``days`` each, committing at most the cap; see the module docstring."""
    settings = ctx.settings
    term = settings.default_days if days is None else days
    window = settings.renew_window
    length = ctx.ledger.deployment.params.epoch_length
    epochs = settings.epochs_for(term, length)
    if term <= window:
        raise UsageError(
            f"a renewal of {term:g} days would leave a lease inside the renewal window of"
            f" {window:g} days: renew for longer than the window"
        )
    if max_spend is not None and max_spend < 0:
        raise UsageError("the spending cap must not be negative")
    record = SpendRecord(settings.renew_record) if settings.renew_record else None
    budget = settings.renew_budget
    spent_before = record.spent() if record is not None else Wei(0)
    allowance = _allowance(max_spend, budget, spent_before)

    now = await ctx.chain_now()
    horizon = now + int(window * DAY)
    leases = await ctx.leases.mine(refresh=True)
    due = sorted(
        (x for x in leases if x.end_epoch * length <= horizon), key=lambda x: (x.end_epoch, x.id)
    )
    registry = {p.owner.lower(): p for p in await ctx.peers.registry()}
    checks = await asyncio.gather(
        *(_obstacle(ctx, x, registry.get(x.provider.lower()), now) for x in due)
    )

    left = allowance
    plan: list[tuple[Lease, Wei]] = []
    skipped: list[Skipped] = []
    for lease, obstacle in zip(due, checks, strict=True):
        if obstacle is not None:
            skipped.append(obstacle)
            continue
        cost = Wei(lease.price * lease.units * epochs)
        if left is None:
            skipped.append(
                _skip(
                    lease,
                    length,
                    "no spending cap: give one (nuclux renew --max-spend) or set renew_budget",
                    cost,
                )
            )
        elif cost > left:
            skipped.append(
                _skip(
                    lease,
                    length,
                    f"renewing costs {format_nux(cost)} NUX, more than the"
                    f" {format_nux(left)} NUX left under the cap",
                    cost,
                )
            )
        else:
            left = Wei(left - cost)
            plan.append((lease, cost))

    if dry_run:
        renewed = [_renewal(x, x.end_epoch + epochs, length, epochs, c, "planned") for x, c in plan]
    else:
        renewed = await _extend_all(ctx, plan, epochs, record, budget, skipped)
    spent = Wei(sum(r.cost for r in renewed))
    if any(s.at_risk for s in skipped):
        skipped = await _name_files(ctx, skipped)
    return RenewalReport(
        renewed=tuple(renewed),
        skipped=tuple(sorted(skipped, key=lambda s: (s.ends_at, s.lease_id))),
        spent=spent,
        allowance=allowance,
        budget=None if budget is None else Wei(budget),
        budget_spent=record.spent() if record is not None else Wei(0),
        window_days=window,
        days=term,
        dry_run=dry_run,
    )


def _allowance(max_spend: int | None, budget: int | None, spent: int) -> Wei | None:
    caps = [
        c for c in (max_spend, None if budget is None else max(0, budget - spent)) if c is not None
    ]
    return Wei(min(caps)) if caps else None


def _skip(
    lease: Lease, length: int, reason: str, cost: Wei | None = None, *, at_risk: bool = True
) -> Skipped:
    return Skipped(lease.id, lease.provider, lease.end_epoch * length, reason, at_risk, cost)


def _renewal(
    lease: Lease, end_epoch: int, length: int, epochs: int, cost: Wei, status: str
) -> Renewal:
    return Renewal(
        lease.id, lease.provider, lease.end_epoch * length, end_epoch * length, epochs, cost, status
    )


async def _obstacle(
    ctx: StorageContext, lease: Lease, info: ProviderInfo | None, now: int
) -> Skipped | None:
    """Why ``lease`` is not renewed (None: it can be): its provider, its state, its data."""
    length = ctx.ledger.deployment.params.epoch_length
    moved = "repair moves its data to new providers"
    if info is None or info.status != "active":
        status = "unregistered" if info is None else info.status
        return _skip(lease, length, f"its provider is {status} (draining): {moved}")
    if info.suspended_until > now:
        return _skip(lease, length, f"its provider is suspended: {moved}")
    if lease.state is LeaseState.ACTIVE_TICKETED:
        if lease.ext_deadline >= now:
            return _skip(
                lease,
                length,
                "an extension already waits for the provider to accept it",
                at_risk=False,
            )
        return _skip(lease, length, f"the provider did not accept the last extension: {moved}")
    probe = await ctx.peers.probe(info, ctx.settings.probe_timeout)
    if not probe.reachable or probe.draining:
        why = "draining" if probe.reachable else f"unreachable ({probe.error})"
        return _skip(lease, length, f"its provider is {why}: {moved}")
    try:
        usage = await asyncio.wait_for(
            ctx.peers.client(info).usage(lease.id), ctx.settings.probe_timeout
        )
        used = int(usage["used_bytes"])
    except (*PEER_ERRORS, KeyError, TypeError, ValueError) as err:
        return _skip(lease, length, f"its provider did not say what it holds ({err}): {moved}")
    if used <= 0:
        return _skip(lease, length, "it holds no data: left to end", at_risk=False)
    return None


async def _extend_all(
    ctx: StorageContext,
    plan: list[tuple[Lease, Wei]],
    epochs: int,
    record: SpendRecord | None,
    budget: int | None,
    skipped: list[Skipped],
) -> list[Renewal]:
    """Send the extensions (one transaction at a time, each counted against the budget before
    it is sent), then wait for the providers' answers together."""
    length = ctx.ledger.deployment.params.epoch_length
    sent: list[tuple[Lease, Wei]] = []
    for lease, cost in plan:
        if record is not None and not record.reserve(cost, budget):
            why = "the renewal budget was spent meanwhile (by another renewal)"
            skipped.append(_skip(lease, length, why, cost))
            continue
        try:
            await ctx.leases.extend(lease, epochs)
        except NucluxError as err:
            if record is not None:
                record.add(-cost, renewals=-1)
            skipped.append(_skip(lease, length, f"the extension failed: {err}", cost))
        else:
            sent.append((lease, cost))
    answers = await _answers(ctx, [lease for lease, _ in sent])
    out: list[Renewal] = []
    for (lease, cost), answer in zip(sent, answers, strict=True):
        if isinstance(answer, Lease):
            out.append(_renewal(lease, answer.end_epoch, length, epochs, cost, "renewed"))
        elif answer is None:
            out.append(_renewal(lease, lease.end_epoch + epochs, length, epochs, cost, "pending"))
        else:
            if record is not None:
                record.add(-cost, renewals=-1)
            skipped.append(_skip(lease, length, answer, cost))
    return out


async def _answers(ctx: StorageContext, leases: list[Lease]) -> list[Lease | str | None]:
    """Each provider's answer to its extension: the lease as extended, why not, or None if it
    has not answered within ``accept_timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ctx.settings.accept_timeout
    out: dict[int, Lease | str] = {}
    while True:
        waiting = [x for x in leases if x.id not in out]
        latest = await asyncio.gather(*(ctx.peers.lease(x.id, fresh=True) for x in waiting))
        for before, now in zip(waiting, latest, strict=True):
            if now.state is LeaseState.ACTIVE_TICKETED:
                continue
            ctx.leases.note(now)
            if now.state is LeaseState.ACTIVE and now.end_epoch > before.end_epoch:
                out[now.id] = now
            elif now.state is LeaseState.ACTIVE:
                out[now.id] = "the provider declined the extension (its escrow was refunded)"
            else:
                out[now.id] = f"the lease became {now.state.label} meanwhile"
        if len(out) == len(leases) or loop.time() >= deadline:
            return [out.get(x.id) for x in leases]
        await asyncio.sleep(ctx.settings.poll_interval)


async def _name_files(ctx: StorageContext, skipped: list[Skipped]) -> list[Skipped]:
    """The skipped leases at risk, each with the index's files that have data on it (their
    manifests say where; a file whose manifest cannot be read counts its index locators)."""
    ids = {s.lease_id for s in skipped if s.at_risk}
    try:
        index = await ctx.index.current()
    except NucluxError:
        return skipped  # the index cannot be read: the leases are reported without files
    gate = asyncio.Semaphore(8)

    async def homes(ref: Reference, locators: tuple[int, ...]) -> set[int]:
        async with gate:
            try:
                opened = await reading.open_file(ctx, ref)
            except PEER_ERRORS:
                return set(locators)
        held = set(opened.manifest_leases) | set(locators)
        if opened.body.layout is not None:
            held |= {s.lease_id for s in opened.body.layout.shares}
        return held

    refs = [index.reference(e) for e in index.entries]
    found = await asyncio.gather(
        *(homes(ref, e.locators) for ref, e in zip(refs, index.entries, strict=True))
    )
    on: dict[int, list[Reference]] = {i: [] for i in ids}
    for ref, held in zip(refs, found, strict=True):
        for lid in held & ids:
            on[lid].append(ref)
    return [
        Skipped(
            s.lease_id, s.provider, s.ends_at, s.reason, s.at_risk, s.cost, tuple(on[s.lease_id])
        )
        if s.at_risk
        else s
        for s in skipped
    ]
