"""The clearing rule on worked examples, the commitment's golden vectors, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_abi.packed import encode_packed
from eth_utils.crypto import keccak

from nuclux.core.auction import (
    AuctionRequest,
    Bid,
    Clearing,
    check_reveal,
    clear,
    commitment,
    tie_key,
    utility,
)
from nuclux.core.auth import to_address
from nuclux.core.types import Address, ResourceClass
from nuclux.errors import IntegrityError, UsageError

VECTORS = json.loads((Path(__file__).parent / "vectors" / "auction.json").read_text())
SEED = bytes(range(32))


def addr(i: int) -> Address:
    return to_address(i.to_bytes(20, "big"))


def request(m: int = 2, reserve: int = 100, m_min: int | None = None) -> AuctionRequest:
    return AuctionRequest(
        7, ResourceClass.STORAGE, units=10, term=3, m=m, reserve=reserve, m_min=m_min
    )


def bids(*prices: int) -> list[Bid]:
    return [Bid(addr(i + 1), p) for i, p in enumerate(prices)]


def prices(c: Clearing) -> list[int]:
    return [b.price for b in c.winners]


def test_m_lowest_win_at_the_next_price() -> None:
    c = clear(request(m=2), bids(50, 30, 70, 40, 90), SEED)
    assert prices(c) == [30, 40]
    assert [b.bidder for b in c.winners] == [addr(2), addr(4)]
    assert c.price == 50  # the third-lowest bid
    assert c.acceptable == 5
    assert c.ok


def test_bids_above_the_reserve_do_not_count_and_the_reserve_sets_the_price() -> None:
    c = clear(request(m=2, reserve=60), bids(50, 30, 70, 90), SEED)
    assert prices(c) == [30, 50]
    assert c.price == 60  # only two acceptable bids: the reserve
    assert c.acceptable == 2
    at_reserve = clear(request(m=1, reserve=60), bids(60, 61), SEED)
    assert prices(at_reserve) == [60]
    assert at_reserve.price == 60


def test_too_few_acceptable_bids_fail_unless_the_minimum_allows() -> None:
    failed = clear(request(m=3, reserve=60), bids(50, 30, 70), SEED)
    assert not failed.ok
    assert failed.winners == ()
    assert failed.price == 0
    assert failed.acceptable == 2
    partial = clear(request(m=3, reserve=60, m_min=2), bids(50, 30, 70), SEED)
    assert prices(partial) == [30, 50]
    assert partial.price == 60
    assert not clear(request(m=1), [], SEED).ok


def test_ties_break_by_the_seeded_key_whatever_the_order() -> None:
    tied = bids(40, 40, 40, 40, 40, 40)
    c = clear(request(m=2), tied, SEED)
    assert c.price == 40
    expected = sorted(tied, key=lambda b: tie_key(SEED, b.bidder))[:2]
    assert list(c.winners) == expected
    assert clear(request(m=2), list(reversed(tied)), SEED) == c
    outcomes = {clear(request(m=2), tied, bytes([s]) * 32).winner_set for s in range(12)}
    assert len(outcomes) > 1  # another seed picks other winners


def test_a_tie_at_the_boundary_only_hashes_between_the_tied() -> None:
    c = clear(request(m=3), bids(10, 40, 40, 40, 20), SEED)
    assert prices(c) == [10, 20, 40]
    assert c.price == 40
    tied = [b for b in bids(10, 40, 40, 40, 20) if b.price == 40]
    assert c.winners[2] == min(tied, key=lambda b: tie_key(SEED, b.bidder))


def test_utility_and_escrow() -> None:
    r = request(m=2)
    c = clear(r, bids(50, 30, 70), SEED)
    assert c.price == 70
    assert utility(r, c, addr(2), 30) == (70 - 30) * 10 * 3
    assert utility(r, c, addr(2).lower(), 30) == 1200
    assert utility(r, c, addr(1), 50) == 600
    assert utility(r, c, addr(3), 70) == 0
    assert r.escrow == 2 * 10 * 3 * 100
    assert r.cost(50) == 1500
    assert r.minimum == 2
    assert request(m=3, m_min=1).minimum == 1


@pytest.mark.parametrize("vector", VECTORS["commitments"])
def test_commitment_golden_vectors(vector: dict[str, str]) -> None:
    price, rid = int(vector["price"]), int(vector["request_id"])
    salt = bytes.fromhex(vector["salt"])
    sealed = commitment(price, salt, vector["bidder"], rid)
    assert sealed.hex() == vector["commitment"]
    # The same bytes as Solidity's abi.encodePacked, computed independently.
    packed = encode_packed(
        ["string", "uint256", "bytes32", "address", "uint256"],
        ["nuclux/bid/v1", price, salt, vector["bidder"], rid],
    )
    assert len(packed) == 129
    assert keccak(packed) == sealed
    assert check_reveal(sealed, price, salt, vector["bidder"], rid) == Bid(
        Address(vector["bidder"]), price
    )


@pytest.mark.parametrize("vector", VECTORS["tie_keys"])
def test_tie_key_golden_vectors(vector: dict[str, str]) -> None:
    seed = bytes.fromhex(vector["seed"])
    key = tie_key(seed, vector["bidder"])
    assert key.hex() == vector["key"]
    packed = encode_packed(
        ["string", "bytes32", "address"], ["nuclux/bid-tie/v1", seed, vector["bidder"]]
    )
    assert keccak(packed) == key


def test_a_reveal_that_does_not_match_is_refused() -> None:
    salt = bytes(range(32))
    sealed = commitment(55, salt, addr(1), 9)
    assert check_reveal(sealed, 55, salt, addr(1), 9).price == 55
    for price, s, bidder, rid in [
        (56, salt, addr(1), 9),  # another price
        (55, bytes(32), addr(1), 9),  # another salt
        (55, salt, addr(2), 9),  # copied by another provider
        (55, salt, addr(1), 10),  # replayed on another request
    ]:
        with pytest.raises(IntegrityError, match="does not match its commitment"):
            check_reveal(sealed, price, s, bidder, rid)


def test_bad_input_is_refused() -> None:
    with pytest.raises(UsageError, match="one bid per provider"):
        clear(request(), [Bid(addr(1), 5), Bid(Address(addr(1).lower()), 6)], SEED)
    with pytest.raises(UsageError, match="invalid bidder"):
        clear(request(), [Bid(Address("0x12"), 5)], SEED)
    with pytest.raises(UsageError, match="invalid price"):
        clear(request(), [Bid(addr(1), -1)], SEED)
    with pytest.raises(UsageError, match="invalid price"):
        clear(request(), [Bid(addr(1), 0)], SEED)
    with pytest.raises(UsageError, match="invalid price"):
        clear(request(), [Bid(addr(1), 2**128)], SEED)
    with pytest.raises(UsageError, match="seed is 32 bytes"):
        clear(request(), bids(5), b"short")
    with pytest.raises(UsageError, match="seed is 32 bytes"):
        tie_key(b"", addr(1))
    with pytest.raises(UsageError, match="salt is 32"):
        commitment(1, b"salt", addr(1), 1)
    with pytest.raises(UsageError, match="bid price"):
        commitment(2**128, bytes(32), addr(1), 1)
    with pytest.raises(UsageError, match="request id"):
        commitment(1, bytes(32), addr(1), -1)
    with pytest.raises(UsageError, match="invalid address"):
        commitment(1, bytes(32), "nobody", 1)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("m", 0, "number of providers"),
        ("m", 65, "number of providers"),
        ("m_min", 0, "minimum number"),
        ("m_min", 3, "minimum number"),
        ("reserve", 0, "reserve price"),
        ("reserve", 2**128, "reserve price"),
        ("units", 0, "units per provider"),
        ("term", 0, "term in epochs"),
        ("request_id", -1, "request id"),
        ("cls", 3, "resource class"),
    ],
)
def test_bad_requests_are_refused(field: str, value: int, message: str) -> None:
    fields: dict[str, object] = {
        "request_id": 1,
        "cls": ResourceClass.COMPUTE,
        "units": 1,
        "term": 1,
        "m": 2,
        "reserve": 10,
        "m_min": None,
    }
    fields[field] = value
    with pytest.raises(UsageError, match=message):
        AuctionRequest(**fields)  # type: ignore[arg-type]
