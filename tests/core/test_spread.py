"""``nuclux.core.spread``: endpoints to networks, and candidates reordered so the first ``n``
cover as many networks as there are."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nuclux.core.spread import network_of, spread_order


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
