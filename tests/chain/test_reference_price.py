"""The consensus reference price kept on chain: per class a ring of the last REF_WINDOW
clearings with at least REF_MIN_BIDDERS revealed bids, and a view computing their
value-weighted lower median, equal to ``nuclux.core.market_price.reference_price`` on the
same clearings (as the ring fills, wraps, and across classes)."""

from __future__ import annotations

import random

import pytest

from nuclux.chain.market_ledger import RequestStatus
from nuclux.core.market_price import ClearedAuction, reference_price
from nuclux.core.types import ResourceClass
from nuclux.errors import ContractRevert
from tests.chain.auction_kit import after_commits, after_reveals, market, salt
from tests.chain.world import World

STORAGE, COMPUTE = ResourceClass.STORAGE, ResourceClass.COMPUTE
RESERVE = 10**15
WINDOW, MIN_BIDDERS = 32, 3


async def one_auction(
    w: World, cls: ResourceClass, prices: list[int], m: int, units: int, term: int
) -> ClearedAuction | None:
    """Run an auction where provider i bids prices[i]; its record, or None if it failed."""
    await w.conn.mine()  # not the stale first block after an idle spell (test_auction_replace)
    rid = await market(w.consumers[0]).post_request(cls, units, term, m, RESERVE)
    for i, price in enumerate(prices):
        await market(w.providers[i]).commit_bid(rid, price, salt(f"ref{rid}/{i}"))
    await after_commits(w, rid)
    for i, price in enumerate(prices):
        await market(w.providers[i]).reveal_bid(rid, price, salt(f"ref{rid}/{i}"))
    await after_reveals(w, rid)
    out = await market(w.outsider).finalize(rid)
    if out.status is not RequestStatus.CLEARED:
        return None
    return ClearedAuction(cls, out.price, len(out.leases) * units * term, len(prices))


async def test_the_on_chain_reference_price_equals_the_core_as_the_ring_fills_and_wraps(
    world: World,
) -> None:
    w = world
    m = market(w.deployer)
    assert await m.reference_price(STORAGE) is None  # nothing cleared yet
    assert int(await m._call(m.auctions, "REF_WINDOW")) == WINDOW
    assert int(await m._call(m.auctions, "REF_MIN_BIDDERS")) == MIN_BIDDERS
    rng = random.Random(6)
    history: list[ClearedAuction] = []
    qualifying = 0
    for n in range(WINDOW + 12):  # 33 qualifying storage clearings: one more than the ring
        cls = COMPUTE if n % 9 == 3 else STORAGE
        bidders = 2 if n % 8 == 1 else 3  # two bidders do not move the price
        prices = [rng.randrange(1, 11) * 10**14 for _ in range(bidders)]
        record = await one_auction(
            w, cls, prices, m=rng.choice([1, 2]), units=rng.randrange(1, 9), term=2
        )
        assert record is not None
        history.append(record)
        if record.staked_bidders >= MIN_BIDDERS and cls is STORAGE:
            qualifying += 1
        for c in (STORAGE, COMPUTE):
            expected = reference_price(history, c, min_bidders=MIN_BIDDERS, window=WINDOW)
            assert await m.reference_price(c) == expected, (n, c)
    assert qualifying > WINDOW  # the ring wrapped
    kept = await m.recent_clearings(STORAGE)
    wanted = [a for a in history if a.cls is STORAGE and a.staked_bidders >= MIN_BIDDERS]
    assert [(a.price, a.volume) for a in kept] == [(a.price, a.volume) for a in wanted[-WINDOW:]]


async def test_a_heavy_cheap_auction_outweighs_light_dear_ones(world: World) -> None:
    w = world
    dear = [9 * 10**14, 9 * 10**14, 10**15]
    cheap = [10**14, 10**14, 2 * 10**14]
    for _ in range(2):
        await one_auction(w, STORAGE, dear, m=1, units=1, term=1)  # price 9e14, volume 1
    await one_auction(w, STORAGE, cheap, m=2, units=30, term=2)  # price 2e14, volume 120
    assert await market(w.deployer).reference_price(STORAGE) == 2 * 10**14


async def test_recent_clearings_of_an_unknown_class_are_refused(world: World) -> None:
    m = market(world.deployer)
    with pytest.raises(ContractRevert) as info:
        await m._call(m.auctions, "recentClearings", 3)
    assert info.value.error_name == "InvalidClass"
