"""Storage placements through the market: one auction per batch of leases a file needs.

Theory of operation
-------------------
``LeaseBook.ensure`` comes here when ``StorageSettings.use_market`` is on. Leases of ours
with room are used first, in the caller's order (no transaction; their terms are extended at
their own price when short, as renewals are). For the ``s`` placements still missing, one
request for ``s`` providers goes to the market (``nuclux.sdk.market``) with units for
``max(need, reserve_bytes)`` and the wanted term; the reserve is ``max_price`` or the
market's default (twice the reference price, else the highest posted price).

The auction, not the consumer, picks the providers, so the request excludes every serving
provider this file cannot use (not among the caller's candidates, or given a share in this
call already), fixed when it is posted: those cannot bid. It also bars the candidates that
would put two of the file's shares in one network (``nuclux.core.spread.spread_bars``): all
but the best of each network, and of the networks the file uses already or the caller
``avoid``s all but as many as it takes to have one bidder more than the winners wanted (so
a losing bid, not the reserve, still sets the price). Past ``MAX_EXCLUDED`` of them (a
large network), or when the registry changed meanwhile, a winner may still be one the file
cannot use: that lease is kept (later files use it) and the next round asks for that many
more providers; after ``MAX_ROUNDS`` rounds the file fails with ``NotEnoughProviders``. A
round that fails (too few bids) raises ``AuctionFailed``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from nuclux.chain.market_ledger import MAX_EXCLUDED
from nuclux.core.spread import network_of, spread_bars
from nuclux.core.types import ResourceClass
from nuclux.sdk.peers import PEER_ERRORS, Probe
from nuclux.sdk.settings import NotEnoughProviders

if TYPE_CHECKING:
    from nuclux.sdk.leases import LeaseBook, Placement

STORAGE = ResourceClass.STORAGE
MAX_ROUNDS: Final = 3


async def market_placements(
    book: LeaseBook,
    probes: list[Probe],
    count: int,
    need: int,
    want: int,
    max_price: int | None,
    avoid: Iterable[str] = (),
) -> list[Placement]:
    from nuclux.sdk.leases import Placement

    out: list[Placement] = []
    used: set[str] = set()
    for probe in probes:
        if len(out) == count:
            break
        if not probe.held:
            continue
        try:
            got = await book.reuse(probe.provider, need, want)
        except PEER_ERRORS:
            continue
        if got is not None:
            out.append(got)
            used.add(probe.provider.owner.lower())
    allowed = {p.provider.owner.lower(): p for p in probes}
    unusable = 0
    for _ in range(MAX_ROUNDS):
        missing = count - len(out)
        if missing <= 0:
            return out
        active = [p for p in await book.peers.registry() if p.status == "active"]
        serving = [p.owner for p in active if p.capacity[STORAGE] > 0]
        barred = [o for o in serving if o.lower() not in allowed or o.lower() in used]
        open_ = [p for p in probes if p.provider.owner.lower() not in used]
        covered = {*avoid, *(network_of(p.provider.endpoint) for p in out)}
        crowded = spread_bars(open_, lambda p: p.network, covered, missing + unusable + 1)
        barred += [p.provider.owner for p in crowded if p.provider.owner in serving]
        barred = barred[:MAX_EXCLUDED]
        m = min(missing + unusable, len(serving) - len(barred))
        if m < missing:
            break
        reserve = max_price if max_price is not None else await book.market.default_reserve(STORAGE)
        leases = await book.market.acquire(
            STORAGE, book.settings.units_for(need), m, want, reserve, m_min=missing, exclude=barred
        )
        book.transactions += book.market.transactions
        book.market.transactions = 0
        for lease in leases:
            book.adopt(lease)
            key = lease.provider.lower()
            home = allowed.get(key)
            if home is None or key in used or len(out) == count:
                unusable += 1
                continue
            book.promise(lease.id, need)
            out.append(Placement(home.provider, lease.id, book.peers.client(home.provider)))
            used.add(key)
    if len(out) < count:
        raise NotEnoughProviders(
            f"the market gave {len(out)} of the {count} providers needed for {need} bytes"
            f" (auction winners this file could not use: {unusable}); the leases won are kept"
            " for later files"
        )
    return out
