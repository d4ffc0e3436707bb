"""Auction windows counted in seconds and in blocks, finalising as soon as every committed bid
is revealed, and a seed taken from the first reveal's own block (embedded EVM, where every
transaction mines a block, so the block counts here are exact).

The house here has commit and reveal windows of ``SECONDS`` seconds and ``BLOCKS`` blocks
each: a window stays open until both have passed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from dataclasses import replace
from typing import Any

import pytest
import pytest_asyncio

from nuclux.chain import ChainConnection
from nuclux.chain.deployment import DeployParams, _deploy_one
from nuclux.chain.market_ledger import MarketLedger, RequestInfo, RequestStatus
from nuclux.core.types import ResourceClass
from nuclux.errors import ContractRevert, InvalidLeaseState
from tests.chain.auction_kit import DEPOSIT, held, market, salt
from tests.chain.world import PARAMS, World, build_world

SECONDS, BLOCKS = 30, 4
WINDOWS = replace(
    PARAMS,
    auction_commit_window=SECONDS,
    auction_reveal_window=SECONDS,
    auction_commit_blocks=BLOCKS,
    auction_reveal_blocks=BLOCKS,
    auction_seed_delay=0,
)
STORAGE = ResourceClass.STORAGE
RESERVE = 10**15


@pytest_asyncio.fixture(scope="module")
async def windows_base() -> AsyncIterator[World]:
    conn = await ChainConnection.open("embedded")
    w = await build_world(conn, params=WINDOWS)
    for p in w.providers:  # the standing allowance, so each bid below is one block
        await market(p).ensure_deposit_allowance()
    yield w
    await conn.close()


@pytest_asyncio.fixture
async def ww(windows_base: World) -> AsyncIterator[World]:
    snap = await windows_base.conn.snapshot()
    yield windows_base
    await windows_base.conn.revert(snap)


async def post(w: World, m: int = 1) -> RequestInfo:
    c = market(w.consumers[0])
    rid = await c.post_request(STORAGE, 10, 4, m, RESERVE)
    return await c.request(rid)


async def mine_to(w: World, block: int) -> None:
    """Mine until the head is ``block``."""
    while await w.conn.block_number() < block:
        await w.conn.mine()


async def refused_by(
    w: World, name: str, house: MarketLedger, rid: int, call: Awaitable[Any]
) -> None:
    """``call`` is refused with ``name`` and changes neither the request nor the house."""
    before = (await house.request(rid), await held(w))
    with pytest.raises(ContractRevert) as info:
        await call
    assert info.value.error_name == name
    assert (await house.request(rid), await held(w)) == before


async def test_a_window_counted_in_blocks_holds_that_many_blocks_after_its_seconds(
    ww: World,
) -> None:
    w = ww
    info = await post(w)
    posted = await w.conn.block_number()
    assert info.commit_end_block == posted + BLOCKS
    assert info.reveal_end_block == posted + 2 * BLOCKS
    assert info.commit_end == (await w.conn.now()) + SECONDS
    # the seconds are over at once: the window lasts its blocks still
    await w.conn.advance_time(2 * SECONDS + 1)
    await mine_to(w, info.commit_end_block - 1)
    p0, p1 = market(w.providers[0]), market(w.providers[1])
    await p0.commit_bid(info.id, 2 * 10**14, salt("a"))  # lands in the window's last block
    assert await w.conn.block_number() == info.commit_end_block
    await refused_by(w, "CommitClosed", p1, info.id, p1.commit_bid(info.id, 10**14, salt("b")))
    # the reveal window: its own blocks, then closed
    await p0.reveal_bid(info.id, 2 * 10**14, salt("a"))
    await mine_to(w, info.reveal_end_block + 1)
    out = await market(w.outsider).finalize(info.id)
    assert out.status is RequestStatus.CLEARED
    assert out.price == RESERVE  # one bid: the reserve


async def test_a_window_counted_in_seconds_holds_after_its_blocks(ww: World) -> None:
    w = ww
    info = await post(w)
    p0, p1 = market(w.providers[0]), market(w.providers[1])
    await mine_to(w, info.commit_end_block + 2)  # the blocks are over; the seconds are not
    await p0.commit_bid(info.id, 2 * 10**14, salt("a"))
    await refused_by(w, "RevealNotOpen", p0, info.id, p0.reveal_bid(info.id, 2 * 10**14, salt("a")))
    await w.conn.advance_time(SECONDS + 1)
    await refused_by(w, "CommitClosed", p1, info.id, p1.commit_bid(info.id, 10**14, salt("b")))
    await p0.reveal_bid(info.id, 2 * 10**14, salt("a"))
    now = await w.conn.now()
    head = await w.conn.block_number()
    assert (await p0.request(info.id)).reveal_open(head + 1, now + 1)  # its seconds are left


async def test_finalising_needs_every_committed_bid_revealed_before_the_reveal_window_ends(
    ww: World,
) -> None:
    w = ww
    info = await post(w, m=1)
    bidders = [market(p) for p in w.providers]
    prices = [3 * 10**14, 2 * 10**14, 4 * 10**14]
    for i, (b, price) in enumerate(zip(bidders, prices, strict=True)):
        await b.commit_bid(info.id, price, salt(f"w{i}"))
    await w.conn.advance_time(SECONDS + 1)
    await mine_to(w, info.commit_end_block + 1)
    anyone = market(w.outsider)
    await bidders[0].reveal_bid(info.id, prices[0], salt("w0"))
    first_reveal = await w.conn.block_number()
    await bidders[1].reveal_bid(info.id, prices[1], salt("w1"))
    # one sealed bid is still out: nobody may finalise before the reveal window ends
    await refused_by(w, "RevealOpen", anyone, info.id, anyone.finalize(info.id))
    await bidders[2].reveal_bid(info.id, prices[2], salt("w2"))
    now, head = await w.conn.now(), await w.conn.block_number()
    state = await anyone.request(info.id)
    assert state.reveal_open(head + 1, now + 1)  # the window is still open ...
    assert state.can_finalize(head + 1, now)  # ... but every bid is in
    out = await anyone.finalize(info.id)
    assert out.status is RequestStatus.CLEARED
    assert [a for a, _ in out.leases] == [w.providers[1].address]
    assert out.price == prices[0]  # the second-lowest
    # the seed is the hash of the first reveal's own block (seed delay 0)
    assert state.seed_block == first_reveal
    block = await w.conn.w3.eth.get_block(first_reveal)
    assert out.seed == bytes(block["hash"])
    assert out.forfeited == 0
    assert await held(w) == 0


async def test_a_request_without_bids_fails_as_soon_as_its_commit_window_closes(
    ww: World,
) -> None:
    w = ww
    info = await post(w)
    anyone = market(w.outsider)
    await refused_by(w, "RevealOpen", anyone, info.id, anyone.finalize(info.id))
    await w.conn.advance_time(SECONDS + 1)
    await mine_to(w, info.commit_end_block + 1)
    out = await anyone.finalize(info.id)  # after the commit window: 0 of 0 bids revealed
    assert out.status is RequestStatus.FAILED
    assert out.refund == info.escrow
    assert await held(w) == 0


async def test_window_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="some seconds or some blocks"):
        DeployParams(auction_commit_window=0, auction_commit_blocks=0)
    with pytest.raises(ValueError, match="some seconds or some blocks"):
        DeployParams(auction_reveal_window=0, auction_reveal_blocks=0)
    with pytest.raises(ValueError, match=r"windows are 0\.\.2"):
        DeployParams(auction_commit_blocks=-1)
    with pytest.raises(ValueError, match="auction_seed_delay"):
        DeployParams(auction_seed_delay=201)
    assert DeployParams(auction_commit_window=0, auction_commit_blocks=2).auction_seed_delay


async def test_the_contract_refuses_a_window_of_nothing(ww: World) -> None:
    w = ww
    d = w.deployer
    head = [d.deployment.address("NuxCoin"), w.registry_address, w.lm_address]
    types = ["address", "address", "address"] + ["uint256"] * 7
    for windows in ([0, 60, 0, 0], [60, 0, 0, 0]):
        with pytest.raises(ContractRevert) as info:
            await _deploy_one(
                w.conn, d.account, "AuctionHouse", types, [*head, *windows, 0, DEPOSIT, 8]
            )
        assert info.value.error_name == "InvalidConfig"
    # blocks alone are a window
    house = await _deploy_one(
        w.conn, d.account, "AuctionHouse", types, [*head, 0, 0, 1, 1, 0, DEPOSIT, 8]
    )
    assert house


async def test_a_late_reveal_is_refused_once_both_bounds_passed(ww: World) -> None:
    w = ww
    info = await post(w)
    p0 = market(w.providers[0])
    await p0.commit_bid(info.id, 2 * 10**14, salt("a"))
    await w.conn.advance_time(2 * SECONDS + 2)
    await mine_to(w, info.reveal_end_block)
    await refused_by(w, "RevealClosed", p0, info.id, p0.reveal_bid(info.id, 2 * 10**14, salt("a")))
    with pytest.raises(InvalidLeaseState):  # the same refusal, as the Python class
        await p0.reveal_bid(info.id, 2 * 10**14, salt("a"))
    out = await market(w.outsider).finalize(info.id)
    assert out.status is RequestStatus.FAILED
    assert out.forfeited == DEPOSIT
