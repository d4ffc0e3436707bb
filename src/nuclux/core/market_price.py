"""The network's consensus reference price per resource class.

Theory of operation
-------------------
Every auction that cleared leaves a record: its class, the uniform clearing price per unit,
the units it traded (winners x units x term) and how many **distinct staked bidders**
revealed a bid in it. The reference price of a class is the **value-weighted median** of the
clearing prices of its most recent qualifying auctions, where

- only auctions with at least ``min_bidders`` distinct staked bidders qualify, so a party
  trading with itself (one consumer, one provider, or a handful of sybils without stake)
  cannot move the price;
- a *restricted* auction (its request barred some providers from bidding) never qualifies:
  a party could otherwise bar every honest provider and let its own staked bidders set the
  price;
- an auction weighs its value: ``price x volume``, so a dust auction at an absurd price
  counts for little (a free one not at all);
- the median is the lower weighted median: the lowest price ``p`` such that the auctions
  priced at most ``p`` carry at least half of the total value. Integer arithmetic only
  (``2 x below >= total``), so every implementation agrees to the wei.

``window`` bounds how many of the most recent qualifying auctions count (records are given
oldest first). With no qualifying auction there is no reference price (None): callers then
fall back to posted prices. Pure: records in, a price out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from nuclux.core.types import ResourceClass
from nuclux.errors import UsageError

DEFAULT_MIN_BIDDERS: Final = 3
DEFAULT_WINDOW: Final = 64


@dataclass(frozen=True, slots=True)
class ClearedAuction:
    """One cleared auction as the reference price sees it."""

    cls: ResourceClass
    price: int
    volume: int
    staked_bidders: int
    restricted: bool = False  # its request barred some providers from bidding

    def __post_init__(self) -> None:
        for name in ("price", "volume", "staked_bidders"):
            value = getattr(self, name)
            if type(value) is not int or value < 0:
                raise UsageError(f"a cleared auction's {name} is a non-negative integer")

    @property
    def value(self) -> int:
        return self.price * self.volume


def weighted_median(points: Iterable[tuple[int, int]]) -> int | None:
    """The lower weighted median of ``(value, weight)`` points; None if the weights sum to 0."""
    ordered = sorted(p for p in points if p[1] > 0)
    total = sum(w for _, w in ordered)
    if total == 0:
        return None
    below = 0
    for value, weight in ordered:
        below += weight
        if 2 * below >= total:
            return value
    raise AssertionError("unreachable: the weights sum to total")  # pragma: no cover


def reference_price(
    history: Iterable[ClearedAuction],
    cls: ResourceClass,
    *,
    min_bidders: int = DEFAULT_MIN_BIDDERS,
    window: int = DEFAULT_WINDOW,
) -> int | None:
    """The reference price of ``cls`` over ``history`` (oldest first), or None."""
    if type(min_bidders) is not int or min_bidders < 2:
        raise UsageError("min_bidders must be at least 2 (one party must not set the price)")
    if type(window) is not int or window < 1:
        raise UsageError("window must be at least 1 auction")
    qualifying = [
        a for a in history if a.cls == cls and a.staked_bidders >= min_bidders and not a.restricted
    ]
    return weighted_median((a.price, a.value) for a in qualifying[-window:])
