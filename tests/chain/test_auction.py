"""Sealed-bid auctions on the real contracts (embedded EVM): clearing as the pure core does,
the winners' leases, deposits and refunds to the wei, and every refusal changing nothing."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from nuclux.chain.deployment import _deploy_one
from nuclux.chain.market_ledger import RequestStatus
from nuclux.core.auction import AuctionRequest, Bid, clear, commitment, tie_key
from nuclux.core.lease import LeaseState
from nuclux.core.types import ONE_NUX, ResourceClass
from nuclux.errors import (
    ContractRevert,
    InsufficientFunds,
    InvalidArgument,
    InvalidLeaseState,
    NotAuthorized,
    ProviderUnavailable,
    UsageError,
)
from tests.chain.auction_kit import DEPOSIT, after_commits, after_reveals, held, market, salt
from tests.chain.world import World

STORAGE = ResourceClass.STORAGE
RESERVE = 10**15  # wei per GiB-epoch
UNITS, TERM = 10, 4


async def post(w: World, m: int = 2, m_min: int | None = None, escrow: int | None = None) -> int:
    await w.conn.mine()  # not the stale first block after an idle spell (test_auction_replace)
    return await market(w.consumers[0]).post_request(
        STORAGE, UNITS, TERM, m, RESERVE, m_min=m_min, escrow=escrow
    )


async def bid_all(w: World, rid: int, prices: list[int]) -> None:
    for i, price in enumerate(prices):
        await market(w.providers[i]).commit_bid(rid, price, salt(f"{rid}/{i}"))


async def reveal_all(w: World, rid: int, prices: list[int]) -> None:
    for i, price in enumerate(prices):
        await market(w.providers[i]).reveal_bid(rid, price, salt(f"{rid}/{i}"))


async def balances(w: World) -> dict[str, int]:
    people = [*w.providers, *w.consumers, *w.operators, w.outsider]
    out: dict[str, int] = {p.address: await w.deployer.balance(p.address) for p in people}
    out["lm"] = await w.deployer.balance(w.lm_address)
    out["house"] = await held(w)
    return out


async def refused(
    w: World,
    error: type[ContractRevert] | type[UsageError],
    name: str,
    call: Callable[[], Awaitable[Any]],
) -> None:
    """``call`` fails with ``error`` (named ``name`` if a contract refused) and moves nothing."""
    before = await balances(w)
    with pytest.raises(error) as info:
        await call()
    if isinstance(info.value, ContractRevert):
        assert info.value.error_name == name
    assert await balances(w) == before


async def test_an_auction_clears_as_the_core_does_and_opens_ticketed_leases(world: World) -> None:
    w = world
    c = market(w.consumers[0])
    start = await balances(w)
    rid = await post(w, m=2)
    escrow = 2 * UNITS * TERM * RESERVE
    assert await held(w) == escrow
    prices = [7 * 10**14, 4 * 10**14, 9 * 10**14]
    await bid_all(w, rid, prices)
    assert await held(w) == escrow + 3 * DEPOSIT
    await after_commits(w, rid)
    await reveal_all(w, rid, prices)
    assert await held(w) == escrow  # deposits back on reveal
    await after_reveals(w, rid)
    out = await market(w.outsider).finalize(rid)  # anyone may finalise

    assert out.status is RequestStatus.CLEARED
    assert out.price == 9 * 10**14  # the third-lowest bid
    assert out.seed is not None
    expected = await c.expected_clearing(rid, out.seed)
    assert [a for a, _ in out.leases] == [b.bidder for b in expected.winners]
    assert [a for a, _ in out.leases] == [w.providers[1].address, w.providers[0].address]
    assert expected.price == out.price
    each = UNITS * TERM * out.price
    for provider, lid in out.leases:
        lease = await w.deployer.lease(lid)
        assert lease.state is LeaseState.TICKETED
        assert (lease.consumer, lease.provider) == (w.consumers[0].address, provider)
        assert (lease.price, lease.escrow, lease.units) == (out.price, each, UNITS)
    info = await c.request(rid)
    assert (info.status, info.price, info.winners) == (RequestStatus.CLEARED, out.price, 2)
    end = await balances(w)
    assert end[w.consumers[0].address] == start[w.consumers[0].address] - 2 * each
    assert out.refund == escrow - 2 * each
    assert out.forfeited == 0
    assert end["house"] == 0
    assert end["lm"] == start["lm"] + 2 * each
    for p in w.providers:
        assert end[p.address] == start[p.address]  # deposits returned
    # the winner accepts its ticket as any other lease
    await w.operators[1].accept(out.leases[0][1])
    assert (await w.deployer.lease(out.leases[0][1])).state is LeaseState.ACTIVE


async def test_ties_break_by_the_recorded_seed(world: World) -> None:
    w = world
    rid = await post(w, m=1)
    prices = [5 * 10**14] * 3
    await bid_all(w, rid, prices)
    await after_commits(w, rid)
    await reveal_all(w, rid, prices)
    await after_reveals(w, rid)
    out = await market(w.outsider).finalize(rid)
    assert out.seed is not None
    first = min(w.providers, key=lambda p: tie_key(out.seed or b"", p.address))
    assert [a for a, _ in out.leases] == [first.address]
    assert out.price == 5 * 10**14
    core = AuctionRequest(rid, STORAGE, UNITS, TERM, 1, RESERVE)
    bids = [Bid(p.address, price) for p, price in zip(w.providers, prices, strict=True)]
    assert clear(core, bids, out.seed).winners[0].bidder == first.address


async def test_fewer_than_m_revealed_refunds_everything_and_forfeits_the_silent(
    world: World,
) -> None:
    w = world
    start = await balances(w)
    rid = await post(w, m=3)
    prices = [4 * 10**14, 6 * 10**14, 8 * 10**14]
    await bid_all(w, rid, prices)
    await after_commits(w, rid)
    await reveal_all(w, rid, prices[:2])  # provider 2 never reveals
    await after_reveals(w, rid)
    out = await market(w.outsider).finalize(rid)
    assert out.status is RequestStatus.FAILED
    assert out.leases == ()
    assert out.forfeited == DEPOSIT
    end = await balances(w)
    consumer = w.consumers[0].address
    assert end[consumer] == start[consumer] + DEPOSIT  # escrow back, plus the forfeit
    assert end[w.providers[2].address] == start[w.providers[2].address] - DEPOSIT
    assert end[w.providers[0].address] == start[w.providers[0].address]
    assert end["house"] == 0
    assert end["lm"] == start["lm"]


async def test_a_smaller_minimum_clears_at_the_reserve(world: World) -> None:
    w = world
    start = await balances(w)
    rid = await post(w, m=3, m_min=1, escrow=3 * UNITS * TERM * RESERVE + 12345)
    prices = [4 * 10**14, 6 * 10**14, 8 * 10**14]
    await bid_all(w, rid, prices)
    await after_commits(w, rid)
    await reveal_all(w, rid, prices[:2])
    await after_reveals(w, rid)
    out = await market(w.outsider).finalize(rid)
    assert out.status is RequestStatus.CLEARED
    assert out.price == RESERVE  # fewer than m + 1 revealed bids
    assert len(out.leases) == 2
    each = UNITS * TERM * RESERVE
    end = await balances(w)
    consumer = w.consumers[0].address
    assert out.forfeited == DEPOSIT
    assert end[consumer] == start[consumer] - 2 * each + DEPOSIT  # excess escrow refunded
    assert end["house"] == 0


async def test_an_operator_bids_for_its_provider_and_gets_the_deposit_back(world: World) -> None:
    w = world
    op = w.operators[0]
    await w.deployer.transfer(op.address, 5 * ONE_NUX)
    rid = await post(w, m=1)
    price = 3 * 10**14
    before = await w.deployer.balance(op.address)
    await market(op).commit_bid(rid, price, salt("op"), provider=w.providers[0].address)
    assert await w.deployer.balance(op.address) == before - DEPOSIT
    bid = await market(w.deployer).bid(rid, w.providers[0].address)
    assert bid.depositor == op.address
    assert bid.commitment == commitment(price, salt("op"), w.providers[0].address, rid)
    await after_commits(w, rid)
    await market(op).reveal_bid(rid, price, salt("op"), provider=w.providers[0].address)
    assert await w.deployer.balance(op.address) == before
    await after_reveals(w, rid)
    out = await market(w.outsider).finalize(rid)
    assert [a for a, _ in out.leases] == [w.providers[0].address]
    assert out.price == RESERVE


async def test_a_seed_too_old_to_read_is_armed_again(world: World) -> None:
    w = world
    rid = await post(w, m=1)
    await bid_all(w, rid, [2 * 10**14, 3 * 10**14])
    await after_commits(w, rid)
    await reveal_all(w, rid, [2 * 10**14, 3 * 10**14])
    await after_reveals(w, rid)
    for _ in range(257):
        await w.conn.mine()
    m = market(w.outsider)
    again = await m.finalize(rid)
    assert again.status is RequestStatus.OPEN
    assert again.seed_block is not None
    assert (await m.request(rid)).seed_block == again.seed_block
    await refused(w, InvalidLeaseState, "SeedNotReady", lambda: m.finalize(rid))
    await after_reveals(w, rid)
    out = await m.finalize(rid)
    assert out.status is RequestStatus.CLEARED
    assert out.price == 3 * 10**14
    assert await held(w) == 0


# -- refusals -----------------------------------------------------------------------------------


async def test_reveals_that_do_not_match_or_come_at_the_wrong_time_are_refused(
    world: World,
) -> None:
    w = world
    rid = await post(w, m=1)
    p0, p1 = market(w.providers[0]), market(w.providers[1])
    await p0.commit_bid(rid, 5 * 10**14, salt("a"))
    await refused(
        w, InvalidLeaseState, "RevealNotOpen", lambda: p0.reveal_bid(rid, 5 * 10**14, salt("a"))
    )
    await after_commits(w, rid)
    await refused(
        w, InvalidLeaseState, "CommitClosed", lambda: p1.commit_bid(rid, 10**14, salt("b"))
    )
    for price, s in [(6 * 10**14, salt("a")), (5 * 10**14, salt("other"))]:
        await refused(w, InvalidArgument, "RevealMismatch", partial(p0.reveal_bid, rid, price, s))
    await refused(w, InvalidArgument, "NoBid", lambda: p1.reveal_bid(rid, 10**14, salt("b")))
    # another provider cannot open (or replay) someone else's commitment
    await refused(
        w,
        NotAuthorized,
        "NotOwnerOrOperator",
        lambda: p1.reveal_bid(rid, 5 * 10**14, salt("a"), provider=w.providers[0].address),
    )
    await refused(w, InvalidLeaseState, "RevealOpen", lambda: market(w.outsider).finalize(rid))
    await after_reveals(w, rid)
    await refused(
        w, InvalidLeaseState, "RevealClosed", lambda: p0.reveal_bid(rid, 5 * 10**14, salt("a"))
    )
    out = await market(w.outsider).finalize(rid)  # the silent bid is forfeited
    assert out.status is RequestStatus.FAILED
    assert out.forfeited == DEPOSIT
    await refused(
        w, InvalidLeaseState, "AlreadyFinalized", lambda: market(w.outsider).finalize(rid)
    )


async def test_bids_above_the_reserve_are_refused(world: World) -> None:
    w = world
    rid = await post(w, m=1)
    p0 = market(w.providers[0])
    await refused(w, UsageError, "", lambda: p0.commit_bid(rid, RESERVE + 1, salt("x")))
    await refused(w, UsageError, "", lambda: p0.commit_bid(rid, 0, salt("x")))
    # a client that seals one anyway cannot reveal it
    sealed = commitment(RESERVE + 1, salt("x"), w.providers[0].address, rid)
    await p0._ensure_allowance(p0.auctions.address, DEPOSIT)
    await p0._send(p0.auctions, "commit", [rid, w.providers[0].address, sealed], "raw commit")
    await after_commits(w, rid)
    await refused(
        w,
        InvalidArgument,
        "BidAboveReserve",
        lambda: p0.reveal_bid(rid, RESERVE + 1, salt("x")),
    )


async def test_one_bid_per_provider_and_at_most_max_bids(world: World) -> None:
    w = world
    rid = await post(w, m=1)
    p0 = market(w.providers[0])
    await p0.commit_bid(rid, 10**14, salt("1"))
    await refused(w, InvalidArgument, "AlreadyBid", lambda: p0.commit_bid(rid, 10**14, salt("2")))
    # a house that takes two bids per request refuses the third
    d = w.deployer
    params = [
        d.deployment.address("NuxCoin"),
        w.registry_address,
        w.lm_address,
        60,
        60,
        0,
        0,
        2,
        DEPOSIT,
        2,
    ]
    types = ["address", "address", "address"] + ["uint256"] * 7
    small = await _deploy_one(w.conn, d.account, "AuctionHouse", types, params)
    house = w.conn.contract("AuctionHouse", small)
    consumer = market(w.consumers[0])
    await consumer._ensure_allowance(small, UNITS * TERM * RESERVE)
    await consumer._send(
        house, "post", [(0, UNITS, TERM, 1, 1, RESERVE, UNITS * TERM * RESERVE), []], "post"
    )
    for i in range(2):
        who = market(w.providers[i])
        await who._ensure_allowance(small, DEPOSIT)
        sealed = commitment(10**14, salt("s"), who.address, 1)
        await who._send(house, "commit", [1, who.address, sealed], "commit")
    last = market(w.providers[2])
    await last._ensure_allowance(small, DEPOSIT)
    sealed = commitment(10**14, salt("s"), last.address, 1)
    await refused(
        w,
        InvalidArgument,
        "TooManyBids",
        lambda: last._send(house, "commit", [1, last.address, sealed], "commit"),
    )


async def test_requests_without_enough_escrow_or_providers_are_refused(world: World) -> None:
    w = world
    c = market(w.consumers[0])
    needed = 2 * UNITS * TERM * RESERVE
    await refused(w, UsageError, "", lambda: post(w, m=2, escrow=needed - 1))
    await c._ensure_allowance(c.auctions.address, needed)
    args = [0, UNITS, TERM, 2, 2, RESERVE]
    await refused(
        w,
        InsufficientFunds,
        "InsufficientEscrow",
        lambda: c._send(c.auctions, "post", [(*args, needed - 1), []], "post"),
    )
    await refused(
        w,
        ProviderUnavailable,
        "NotEnoughProviders",
        lambda: c._send(
            c.auctions, "post", [(0, UNITS, TERM, 4, 1, RESERVE, 4 * needed), []], "post"
        ),
    )
    await refused(
        w,
        InvalidArgument,
        "BadProviderCount",
        lambda: c._send(c.auctions, "post", [(0, UNITS, TERM, 2, 3, RESERVE, needed), []], "post"),
    )
    await refused(
        w,
        InvalidArgument,
        "InvalidClass",
        lambda: c._send(c.auctions, "post", [(3, UNITS, TERM, 2, 2, RESERVE, needed), []], "post"),
    )
    poor = market(w.outsider)
    await refused(
        w,
        InsufficientFunds,
        "ERC20InsufficientAllowance",
        lambda: poor._send(poor.auctions, "post", [(*args, needed), []], "post"),
    )
    await refused(w, UsageError, "", lambda: c.post_request(STORAGE, 0, TERM, 2, RESERVE))


async def test_only_serving_providers_with_capacity_may_bid(world: World) -> None:
    w = world
    rid = await post(w, m=1)
    stranger = market(w.outsider)
    await refused(
        w,
        NotAuthorized,
        "NotOwnerOrOperator",
        lambda: stranger.commit_bid(rid, 10**14, salt("s"), provider=w.providers[0].address),
    )
    await refused(
        w, ProviderUnavailable, "NotRegistered", lambda: stranger.commit_bid(rid, 10**14, salt("s"))
    )
    await w.providers[1].set_paused(True)
    await refused(
        w,
        ProviderUnavailable,
        "ProviderNotServing",
        lambda: market(w.providers[1]).commit_bid(rid, 10**14, salt("s")),
    )
    big = await market(w.consumers[0]).post_request(STORAGE, 5000, 1, 1, RESERVE)  # > capacity
    await refused(
        w,
        ProviderUnavailable,
        "CapacityTooSmall",
        lambda: market(w.providers[0]).commit_bid(big, 10**14, salt("s")),
    )


async def test_only_the_auction_house_opens_leases_for_others(world: World) -> None:
    w = world
    lm = w.deployer.leases
    assert await w.deployer._call(lm, "auctionHouse") == w.deployment.address("AuctionHouse")
    args = [w.consumers[0].address, w.providers[0].address, 0, 1, 1, 1, 1]
    await refused(
        w,
        NotAuthorized,
        "NotAuctionHouse",
        lambda: w.outsider._send(lm, "openLeaseFor", args, "open for"),
    )
    await refused(
        w,
        NotAuthorized,
        "OwnableUnauthorizedAccount",
        lambda: w.deployer._send(lm, "setAuctionHouse", [w.outsider.address], "rebind"),
    )


async def test_the_contract_seals_and_ranks_bids_as_the_core_does(world: World) -> None:
    """The golden vectors of ``tests/core/vectors/auction.json`` through the contract."""
    vectors = json.loads((Path(__file__).parents[1] / "core/vectors/auction.json").read_text())
    m = market(world.deployer)
    for v in vectors["commitments"]:
        got = await m._call(
            m.auctions,
            "commitmentOf",
            int(v["price"]),
            bytes.fromhex(v["salt"]),
            v["bidder"],
            int(v["request_id"]),
        )
        assert bytes(got).hex() == v["commitment"]
    for v in vectors["tie_keys"]:
        got = await m._call(m.auctions, "tieKey", bytes.fromhex(v["seed"]), v["bidder"])
        assert bytes(got).hex() == v["key"]
