"""The mechanism's promises as properties over random markets (hypothesis), the reference
price, and the simulator that plays many auctions.

Costs and bids are drawn from a narrow range so that ties are common."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nuclux.core.auction import AuctionRequest, Bid, Clearing, clear, tie_key, utility
from nuclux.core.auth import to_address
from nuclux.core.market_price import ClearedAuction, reference_price, weighted_median
from nuclux.core.types import ResourceClass
from nuclux.errors import UsageError
from nuclux.sim.market import Provider, Stats, check_round, deviations, main, play, simulate

ADDRESSES = [to_address(bytes([i]) * 20) for i in range(1, 41)]


@st.composite
def markets(draw: st.DrawFn) -> tuple[AuctionRequest, list[Provider], bytes]:
    n = draw(st.integers(0, 12))
    costs = draw(st.lists(st.integers(1, 30), min_size=n, max_size=n))
    field = [Provider(ADDRESSES[i], c) for i, c in enumerate(costs)]
    m = draw(st.integers(1, 6))
    request = AuctionRequest(
        request_id=draw(st.integers(0, 2**256 - 1)),
        cls=draw(st.sampled_from(list(ResourceClass))),
        units=draw(st.integers(1, 1000)),
        term=draw(st.integers(1, 100)),
        m=m,
        m_min=draw(st.none() | st.integers(1, m)),
        reserve=draw(st.integers(1, 35)),
    )
    return request, field, draw(st.binary(min_size=32, max_size=32))


@given(markets(), st.data())
def test_truthful_bidding_is_a_dominant_strategy(
    market: tuple[AuctionRequest, list[Provider], bytes], data: st.DataObject
) -> None:
    request, field, seed = market
    if not field:
        return
    me = data.draw(st.sampled_from(field))
    lie = data.draw(st.none() | st.integers(1, 40))
    honest = utility(request, play(request, field, seed), me.address, me.cost)
    other = utility(request, play(request, field, seed, {me.address: lie}), me.address, me.cost)
    assert other <= honest
    assert honest >= 0


@given(markets())
def test_winners_are_the_cheapest_paid_at_least_their_bid_within_the_reserve(
    market: tuple[AuctionRequest, list[Provider], bytes],
) -> None:
    request, field, seed = market
    c = play(request, field, seed)
    acceptable = sorted(p.cost for p in field if p.cost <= request.reserve)
    assert c.acceptable == len(acceptable)
    if len(acceptable) < request.minimum:
        assert not c.ok
        assert c.price == 0
        return
    assert len(c.winners) == min(request.m, len(acceptable))
    won = [b.price for b in c.winners]
    assert won == acceptable[: len(won)]  # efficiency: the lowest costs, in rank order
    assert all(c.price >= p for p in won)  # individual rationality
    assert c.price <= request.reserve  # the consumer never pays above its reserve
    expected = acceptable[request.m] if len(acceptable) > request.m else request.reserve
    assert c.price == expected
    assert request.cost(c.price) * len(won) <= request.escrow


@given(markets(), st.randoms(use_true_random=False))
def test_the_outcome_is_deterministic_and_ignores_bid_order(
    market: tuple[AuctionRequest, list[Provider], bytes], rnd: random.Random
) -> None:
    request, field, seed = market
    bids = [Bid(p.address, p.cost) for p in field]
    first = clear(request, bids, seed)
    rnd.shuffle(bids)
    assert clear(request, bids, seed) == first
    ranks = [(b.price, tie_key(seed, b.bidder)) for b in first.winners]
    assert ranks == sorted(ranks)


@given(markets())
def test_ties_follow_the_tie_key(market: tuple[AuctionRequest, list[Provider], bytes]) -> None:
    request, field, seed = market
    c = play(request, field, seed)
    if not c.ok:
        return
    won = c.winner_set
    cutoff = c.winners[-1].price
    worst = max(tie_key(seed, b.bidder) for b in c.winners if b.price == cutoff)
    for p in field:
        if p.cost == cutoff and p.address.lower() not in won:
            assert tie_key(seed, p.address) > worst


@given(markets())
@settings(max_examples=40)
def test_the_simulator_finds_no_violation(
    market: tuple[AuctionRequest, list[Provider], bytes],
) -> None:
    request, field, seed = market
    stats = Stats()
    check_round(request, field, seed, stats)
    assert stats.rounds == 1
    price = play(request, field, seed).price
    assert stats.deviations_tried == sum(
        len(deviations(p.cost, price, request.reserve)) for p in field
    )
    assert stats.violations == 0


def test_a_simulated_market_holds_its_promises() -> None:
    stats, history = simulate(30, 12, seed=5)
    assert stats.rounds == 30
    assert stats.deviations_tried > 1000
    assert stats.violations == 0
    assert stats.winners > 0
    assert stats.surplus >= 0
    assert stats.paid >= stats.winner_costs
    assert len(history) == stats.rounds - stats.failed
    again, _ = simulate(30, 12, seed=5)
    assert again == stats  # seeded: reproducible


def pay_your_bid(request: AuctionRequest, bids: Sequence[Bid], seed: bytes) -> Clearing:
    """A first-price rule: the same winners, each paid its own bid (the highest winning one
    stands in for the uniform price). Not truthful: shading a bid pays."""
    c = clear(request, bids, seed)
    return Clearing(c.winners, c.winners[-1].price if c.winners else 0, c.acceptable)


def test_the_simulator_would_catch_an_untruthful_rule() -> None:
    request = AuctionRequest(1, ResourceClass.STORAGE, 1, 1, m=1, reserve=100)
    field = [Provider(ADDRESSES[0], 10), Provider(ADDRESSES[1], 50)]
    seed = bytes(32)
    stats = Stats()
    check_round(request, field, seed, stats, pay_your_bid)
    assert stats.truthfulness_violations > 0  # bidding 49 instead of 10 gains 39
    shaded = play(request, field, seed, {ADDRESSES[0]: 49}, pay_your_bid)
    assert utility(request, shaded, ADDRESSES[0], 10) == 39
    honest = Stats()
    check_round(request, field, seed, honest)
    assert honest.violations == 0
    assert utility(request, play(request, field, seed), ADDRESSES[0], 10) == 40


# -- the reference price ------------------------------------------------------------------------


def auction(price: int, volume: int = 1, bidders: int = 3, cls: int = 0) -> ClearedAuction:
    return ClearedAuction(ResourceClass(cls), price, volume, bidders)


def test_reference_price_is_the_value_weighted_median() -> None:
    history = [auction(10, 1), auction(20, 1), auction(30, 10)]
    # values 10, 20, 300: half of 330 is reached only at 30
    assert reference_price(history, ResourceClass.STORAGE) == 30
    assert reference_price([auction(10, 3), auction(30, 1)], ResourceClass.STORAGE) == 10
    assert reference_price([], ResourceClass.STORAGE) is None
    assert reference_price([auction(0, 5)], ResourceClass.STORAGE) is None  # free weighs 0
    assert weighted_median([(5, 1), (7, 1)]) == 5  # the lower median


def test_thin_auctions_and_other_classes_do_not_count() -> None:
    wash = auction(10**9, 10**6, bidders=2)  # one party trading with itself
    history = [auction(10), auction(12), wash, auction(11), auction(99, cls=1)]
    assert reference_price(history, ResourceClass.STORAGE) == 11
    assert reference_price(history, ResourceClass.STORAGE, min_bidders=2) == 10**9
    assert reference_price(history, ResourceClass.COMPUTE) == 99
    assert reference_price(history, ResourceClass.BANDWIDTH) is None


def test_restricted_auctions_do_not_count() -> None:
    # a party bars every honest provider and lets three staked sybils clear at its price
    rigged = ClearedAuction(ResourceClass.STORAGE, 10**9, 10**6, 3, restricted=True)
    history = [auction(10), auction(12), rigged, auction(11)]
    assert reference_price(history, ResourceClass.STORAGE) == 11
    assert reference_price([rigged], ResourceClass.STORAGE) is None


def test_only_the_window_counts() -> None:
    history = [auction(100, 10)] * 5 + [auction(10)] * 3
    assert reference_price(history, ResourceClass.STORAGE) == 100
    assert reference_price(history, ResourceClass.STORAGE, window=3) == 10


@given(st.lists(st.tuples(st.integers(1, 50), st.integers(1, 20), st.integers(0, 5)), max_size=30))
def test_reference_price_bounds(points: list[tuple[int, int, int]]) -> None:
    history = [auction(p, v, b) for p, v, b in points]
    price = reference_price(history, ResourceClass.STORAGE, min_bidders=3)
    counted = [a for a in history if a.staked_bidders >= 3][-64:]
    if not counted:
        assert price is None
        return
    assert price is not None
    assert min(a.price for a in counted) <= price <= max(a.price for a in counted)
    total = sum(a.value for a in counted)
    assert 2 * sum(a.value for a in counted if a.price <= price) >= total
    assert 2 * sum(a.value for a in counted if a.price < price) < total


def test_reference_price_bad_input() -> None:
    with pytest.raises(UsageError, match="min_bidders"):
        reference_price([], ResourceClass.STORAGE, min_bidders=1)
    with pytest.raises(UsageError, match="window"):
        reference_price([], ResourceClass.STORAGE, window=0)
    with pytest.raises(UsageError, match="non-negative"):
        ClearedAuction(ResourceClass.STORAGE, -1, 1, 3)


def test_the_simulator_prints_its_findings(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--rounds", "4", "--providers", "6", "--seed", "3"])
    lines = dict(line.split("=", 1) for line in capsys.readouterr().out.splitlines())
    assert lines["rounds"] == "4"
    assert int(lines["deviations_tried"]) > 0
    for name in ("truthfulness", "rationality", "efficiency", "reserve"):
        assert lines[f"{name}_violations"] == "0"
    assert set(lines) >= {"reference_price_storage", "reference_price_compute"}
