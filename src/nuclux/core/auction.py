"""The market's clearing rule and sealed-bid commitments.

Theory of operation
-------------------
A consumer's **request** names a resource class, the units each provider must supply, the
term, how many providers ``m`` it wants (and the fewest ``m_min <= m`` it accepts) and a
**reserve**: the highest price per unit it pays (prices are per class unit, see
``nuclux.core.types``). Providers bid sealed: each first publishes a **commitment** to its
price, later reveals the price and salt. Only revealed bids at or below the reserve are
*acceptable*.

Clearing (uniform-price generalisation of Vickrey, ``clear``):

- fewer than ``m_min`` acceptable bids: the request fails, nobody wins, everything is refunded;
- otherwise the ``min(m, acceptable)`` lowest acceptable bids win, and every winner is paid the
  same price per unit: the ``(m+1)``-th lowest acceptable bid, or the reserve when there are
  fewer than ``m + 1`` acceptable bids.

A winner's pay does not depend on its own bid, only on whether it wins, so bidding one's true
cost is a dominant strategy for a provider supplying one slot; winners are never paid below
their bid and the consumer never pays above its reserve.

Ties are broken by rank key ``(price, tie_key(seed, bidder))`` where::

    tie_key(seed, bidder) = keccak256(b"nuclux/bid-tie/v1" || seed 32 || bidder 20)

The seed comes from a block fixed after the bids are sealed, so the order among equal prices
is deterministic (anyone recomputes it) and unpredictable when bidding. The contract
(``contracts/AuctionHouse.sol``) computes the same key with ``abi.encodePacked``.

Commitment byte layout (129 bytes hashed, all integers big-endian)::

    commitment = keccak256(b"nuclux/bid/v1" 13 || price 32 || salt 32 || bidder 20
                           || request_id 32)

which is Solidity's ``keccak256(abi.encodePacked("nuclux/bid/v1", uint256 price,
bytes32 salt, address bidder, uint256 requestId))``. Binding the bidder and the request
means a commitment cannot be copied by another provider or replayed on another request; the
32-byte salt (random, kept secret until the reveal) hides the price. Golden vectors live in
``tests/core/vectors/auction.json``.

Speed: clearing sorts plain ``(price, index)`` tuples of the acceptable bids and hashes
only the bids that tie with a winner's price, so 10,000 bids clear in a few milliseconds
(``bench/market.py``).
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from nuclux.core.auth import address_bytes, keccak256
from nuclux.core.types import Address, ResourceClass
from nuclux.errors import IntegrityError, UsageError

COMMIT_TAG: Final = b"nuclux/bid/v1"
TIE_TAG: Final = b"nuclux/bid-tie/v1"
SALT_BYTES: Final = 32
SEED_BYTES: Final = 32
MAX_PRICE: Final = 2**128 - 1  # leases store prices as uint128
MAX_REQUEST_ID: Final = 2**256 - 1
MAX_PROVIDERS: Final = 64  # m per request; the contract caps bids per request separately
MAX_UNITS: Final = 2**64 - 1
MAX_TERM: Final = 2**32 - 1
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


def _uint(value: int, low: int, high: int, what: str) -> int:
    if type(value) is not int or not low <= value <= high:
        raise UsageError(f"{what} must be an integer in {low}..{high} (got {value!r})")
    return value


@dataclass(frozen=True, slots=True)
class AuctionRequest:
    """What a consumer asks the market for.

    ``units`` per provider over ``term`` epochs; ``m`` providers wanted, at least ``m_min``
    (None means ``m``: all or nothing); ``reserve`` the highest price per unit it pays."""

    request_id: int
    cls: ResourceClass
    units: int
    term: int
    m: int
    reserve: int
    m_min: int | None = None

    def __post_init__(self) -> None:
        _uint(self.request_id, 0, MAX_REQUEST_ID, "a request id")
        if not isinstance(self.cls, ResourceClass):
            raise UsageError(f"unknown resource class {self.cls!r}")
        _uint(self.units, 1, MAX_UNITS, "units per provider")
        _uint(self.term, 1, MAX_TERM, "the term in epochs")
        _uint(self.m, 1, MAX_PROVIDERS, "the number of providers wanted")
        _uint(self.reserve, 1, MAX_PRICE, "the reserve price per unit")
        if self.m_min is not None:
            _uint(self.m_min, 1, self.m, "the minimum number of providers (at most m)")

    @property
    def minimum(self) -> int:
        """The fewest winners the consumer accepts."""
        return self.m if self.m_min is None else self.m_min

    @property
    def escrow(self) -> int:
        """What the consumer locks: ``m x units x term x reserve`` (the most it can pay)."""
        return self.m * self.units * self.term * self.reserve

    def cost(self, price: int) -> int:
        """What one winner's lease costs over the term at ``price`` per unit."""
        return self.units * self.term * price


@dataclass(frozen=True, slots=True)
class Bid:
    """A revealed bid: ``price`` per unit (at least 1 wei) offered by ``bidder`` (a ``0x``
    address)."""

    bidder: Address
    price: int


@dataclass(frozen=True, slots=True)
class Clearing:
    """The outcome of one auction.

    ``winners`` in rank order (lowest price first, ties by ``tie_key``); ``price`` the
    uniform price per unit every winner is paid (0 when the request failed); ``acceptable``
    how many revealed bids were at or below the reserve."""

    winners: tuple[Bid, ...]
    price: int
    acceptable: int

    @property
    def ok(self) -> bool:
        return bool(self.winners)

    @property
    def winner_set(self) -> frozenset[str]:
        return frozenset(b.bidder.lower() for b in self.winners)


def tie_key(seed: bytes, bidder: str) -> bytes:
    """The tie-break key of ``bidder`` under ``seed`` (32 bytes; lower ranks first)."""
    if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
        raise UsageError(f"a tie-break seed is {SEED_BYTES} bytes")
    return keccak256(TIE_TAG + seed + address_bytes(bidder))


def commitment(price: int, salt: bytes, bidder: str, request_id: int) -> bytes:
    """The sealed form of a bid (32 bytes): see the module docstring for the layout."""
    _uint(price, 0, MAX_PRICE, "a bid price")
    if not isinstance(salt, bytes) or len(salt) != SALT_BYTES:
        raise UsageError(f"a bid salt is {SALT_BYTES} random bytes")
    _uint(request_id, 0, MAX_REQUEST_ID, "a request id")
    return keccak256(
        COMMIT_TAG
        + price.to_bytes(32, "big")
        + salt
        + address_bytes(bidder)
        + request_id.to_bytes(32, "big")
    )


def check_reveal(sealed: bytes, price: int, salt: bytes, bidder: str, request_id: int) -> Bid:
    """The bid a reveal opens, or ``IntegrityError`` if it does not match ``sealed``."""
    if commitment(price, salt, bidder, request_id) != sealed:
        raise IntegrityError(
            f"the reveal of {bidder} does not match its commitment on request {request_id}"
        )
    return Bid(Address(bidder), price)


def _checked(bids: Sequence[Bid]) -> None:
    seen: set[str] = set()
    for bid in bids:
        bidder, price = bid.bidder, bid.price
        if not isinstance(bidder, str) or not _ADDRESS.fullmatch(bidder):
            raise UsageError(f"invalid bidder {bidder!r}: expected 0x and 40 hex digits")
        if type(price) is not int or not 1 <= price <= MAX_PRICE:
            raise UsageError(
                f"the bid of {bidder} has an invalid price {price!r}: 1..{MAX_PRICE} per unit"
            )
        key = bidder.lower()
        if key in seen:
            raise UsageError(f"{bidder} bid twice on one request; one bid per provider")
        seen.add(key)


def clear(request: AuctionRequest, bids: Sequence[Bid], seed: bytes) -> Clearing:
    """Clear ``request`` over its revealed ``bids`` with tie-break ``seed`` (32 bytes).

    Bids above the reserve are ignored; one bid per bidder (``UsageError`` otherwise).
    The result does not depend on the order of ``bids``."""
    if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
        raise UsageError(f"a tie-break seed is {SEED_BYTES} bytes")
    _checked(bids)
    reserve, m = request.reserve, request.m
    acceptable = [(b.price, i) for i, b in enumerate(bids) if b.price <= reserve]
    n = len(acceptable)
    if n < request.minimum:
        return Clearing((), 0, n)
    lowest = heapq.nsmallest(m + 1, acceptable)
    price = lowest[m][0] if n > m else reserve
    k = min(m, n)
    cutoff = lowest[k - 1][0]  # the highest winning price
    below = [i for p, i in lowest[:k] if p < cutoff]
    tied = [i for p, i in acceptable if p == cutoff]
    prefix = TIE_TAG + seed  # tie_key without re-checking addresses _checked has checked

    def key(i: int) -> bytes:
        return keccak256(prefix + bytes.fromhex(bids[i].bidder[2:]))

    chosen = below + sorted(tied, key=key)[: k - len(below)]
    ranked = sorted(chosen, key=lambda i: (bids[i].price, key(i)))
    return Clearing(tuple(bids[i] for i in ranked), price, n)


def utility(request: AuctionRequest, clearing: Clearing, bidder: str, cost: int) -> int:
    """What ``bidder`` with true ``cost`` per unit gains from ``clearing``: ``(price - cost) x
    units x term`` if it won, else 0. The quantity truthfulness is stated in."""
    if bidder.lower() in clearing.winner_set:
        return request.cost(clearing.price) - request.cost(cost)
    return 0
