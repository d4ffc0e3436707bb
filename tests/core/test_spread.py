"""``nuclux.core.spread``: endpoints to networks, candidates reordered so the first ``n`` cover
as many networks as there are, and the bidders an auction leaves out so that its winners do."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nuclux.core.spread import network_of, spread_bars, spread_order


@pytest.mark.parametrize(
    ("endpoint", "network"),
    [
        ("https://127.0.0.1:9000", "127.0.0.0/24"),
        ("https://127.0.0.200:1", "127.0.0.0/24"),
        ("https://127.0.1.1:9000", "127.0.1.0/24"),
        ("https://203.0.113.9:443", "203.0.113.0/24"),
        ("https://[2001:db8:1:2::5]:443", "2001:db8:1::/48"),
        ("https://[2001:db8:1:ffff::1]:443", "2001:db8:1::/48"),
        ("https://Node-1.Example.ORG.:443", "node-1.example.org"),
        ("not a url", "not a url"),
        ("https://[::1:443", "https://[::1:443"),  # malformed: its own network
    ],
)
def test_network_of(endpoint: str, network: str) -> None:
    assert network_of(endpoint) == network


def test_the_best_of_each_network_comes_first() -> None:
    ranked = ["a1", "a2", "b1", "a3", "c1", "b2"]  # network = first letter
    assert spread_order(ranked, lambda x: x[0]) == ["a1", "b1", "c1", "a2", "a3", "b2"]
    assert spread_order(ranked, lambda x: x[0], avoid={"a"}) == [
        "b1",
        "c1",
        "a1",
        "a2",
        "a3",
        "b2",
    ]
    one_network = ["x3", "x1", "x2"]
    assert spread_order(one_network, lambda x: x[0]) == one_network  # a devnet: unchanged


@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers()), unique=True, max_size=30),
    st.sets(st.integers(0, 5)),
    st.integers(0, 30),
)
def test_spread_is_a_permutation_that_maximises_networks(
    ranked: list[tuple[int, int]], avoid: set[int], n: int
) -> None:
    out = spread_order(ranked, lambda x: x[0], avoid)
    assert sorted(out) == sorted(ranked)
    # the first n cover as many new networks as can be covered, then as many as possible
    new = {net for net, _ in ranked} - avoid
    assert len({net for net, _ in out[:n]} - avoid) == min(n, len(new))
    # within each part the rank order is kept
    rank = {x: i for i, x in enumerate(ranked)}
    k = len(new)
    assert [rank[x] for x in out[:k]] == sorted(rank[x] for x in out[:k])
    assert [rank[x] for x in out[k:]] == sorted(rank[x] for x in out[k:])


def test_an_auction_admits_the_best_of_each_network() -> None:
    ranked = ["a1", "a2", "b1", "a3", "c1", "b2"]  # network = first letter
    net = lambda x: x[0]  # noqa: E731
    assert spread_bars(ranked, net, (), 3) == ["a2", "a3", "b2"]
    assert spread_bars(ranked, net, {"a"}, 2) == ["a1", "a2", "a3", "b2"]
    # three bidders cannot all avoid "a": only the duplicates are left out
    assert spread_bars(ranked, net, {"a"}, 3) == ["a2", "a3", "b2"]
    # two bidders, one network left outside "a" and "b": c1 and the better of a1 and b1
    assert spread_bars(ranked, net, {"a", "b"}, 2) == ["a2", "b1", "a3", "b2"]
    # four bidders need four networks: everybody bids, the lowest bids win
    assert spread_bars(ranked, net, (), 4) == []
    assert spread_bars([], net, (), 0) == []


@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers()), unique=True, max_size=30),
    st.sets(st.integers(0, 5)),
    st.integers(1, 8),
)
def test_whoever_is_admitted_is_in_distinct_networks(
    ranked: list[tuple[int, int]], avoid: set[int], keep: int
) -> None:
    bars = spread_bars(ranked, lambda x: x[0], avoid, keep)
    admitted = [x for x in ranked if x not in bars]
    assert len(admitted) + len(bars) == len(ranked)
    networks = {net for net, _ in ranked}
    if len(networks) < keep:
        assert bars == []  # too few networks: nobody is left out
        return
    assert len({net for net, _ in admitted}) == len(admitted)  # one bidder per network
    # each network is represented by its best-ranked candidate
    for x in admitted:
        assert all(y[0] != x[0] for y in ranked[: ranked.index(x)])
    fresh = networks - avoid
    assert {net for net, _ in admitted} >= fresh  # every network outside avoid bids
    # and of the avoided ones only what it takes to reach keep
    assert len(admitted) == max(keep, len(fresh))
