"""Compute leases bought at auction: one request for every provider a job (or map) still
needs.

``ComputeLeases.ensure`` comes here when ``ComputeSettings.use_market`` is on and the leases
held do not cover ``count`` providers outside ``exclude``. One request asks for the missing
number of providers plus one for every serving provider the caller cannot use (excluded or
retired), so those, if they are the cheapest, do not crowd out usable ones; at least one
winner is enough (the job's own logic asks again or fails with ``NoComputeProviders``). The
reserve is ``max_price`` or the market's default. A lease won on a provider the caller cannot
use now is held for later jobs. A winner's lease escrows ``units x term x price``; when that
is less than the settings' escrow for jobs of ``fuel_limit`` it is topped up at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nuclux.core.types import ResourceClass

if TYPE_CHECKING:
    from nuclux.sdk.compute.leases import ComputeLease, ComputeLeases

COMPUTE = ResourceClass.COMPUTE


async def market_leases(
    book: ComputeLeases,
    missing: int,
    exclude: set[str],
    fuel_limit: int,
    max_price: int | None,
) -> list[ComputeLease]:
    settings = book.settings
    registry = await book.peers.registry(max_age=settings.directory_ttl)
    serving = [
        p.owner.lower()
        for p in registry
        if p.status == "active" and p.capacity[COMPUTE] >= settings.units
    ]
    skip = {a.lower() for a in exclude} | set(book.retired)
    m = min(missing + sum(1 for p in serving if p in skip), len(serving))
    if m < 1:
        return []
    market = book.market
    reserve = max_price if max_price is not None else await market.default_reserve(COMPUTE)
    term = settings.epochs_for(book.ledger.deployment.params.epoch_length)
    leases = await market.acquire(COMPUTE, settings.units, m, term, reserve, m_min=1)
    book.transactions += market.transactions
    market.transactions = 0
    out: list[ComputeLease] = []
    for lease in leases:
        cl = await book.adopt(lease)
        if cl is None:
            continue
        need = settings.escrow_for(fuel_limit, lease.price)
        if lease.escrow < need:
            await book.top_up_to(cl, need)
        if cl.provider not in skip and len(out) < missing:
            out.append(cl)
    return out
