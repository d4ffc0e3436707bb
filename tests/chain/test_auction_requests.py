"""Posting auction requests on the real contracts (embedded EVM): one transaction with an
EIP-2612 permit of the escrow, and providers barred from bidding (restricted auctions, never
counted for the reference price). Every refusal moves nothing."""

from __future__ import annotations

from typing import Any

import pytest
from web3 import Web3

from nuclux.chain.ledger import Ledger
from nuclux.chain.market_events import auction_events, cleared_auctions
from nuclux.chain.market_ledger import MAX_EXCLUDED, RequestStatus
from nuclux.core.types import ResourceClass
from nuclux.errors import (
    InsufficientFunds,
    InvalidArgument,
    NotAuthorized,
    ProviderUnavailable,
    UsageError,
)
from tests.chain.auction_kit import after_commits, after_reveals, held, market, salt
from tests.chain.test_auction import refused
from tests.chain.world import STAKE, START_NUX, World, offer
from tests.chain.world import test_account as account_of

STORAGE = ResourceClass.STORAGE
RESERVE = 10**15
UNITS, TERM = 10, 4
ESCROW = UNITS * TERM * RESERVE


async def sent_by(w: World, address: str) -> int:
    return int(await w.conn.w3.eth.get_transaction_count(Web3.to_checksum_address(address)))


async def allowance(w: World, owner: str) -> int:
    coin = w.deployer.coin
    return int(await coin.functions.allowance(owner, w.deployment.address("AuctionHouse")).call())


async def test_a_request_is_one_transaction_and_leaves_no_allowance(world: World) -> None:
    w = world
    c = market(w.consumers[0])
    assert await allowance(w, c.address) == 0
    before = await sent_by(w, c.address)
    rid = await c.post_request(STORAGE, UNITS, TERM, 1, RESERVE)
    assert await sent_by(w, c.address) == before + 1  # no approval
    assert await held(w) == ESCROW
    assert await allowance(w, c.address) == 0  # the permit allowed exactly the escrow
    assert (await c.request(rid)).escrow == ESCROW
    # a standing allowance is used as it is (no permit, nothing changes it)
    await c._ensure_allowance(c.auctions.address, 3 * ESCROW)
    before = await sent_by(w, c.address)
    await c.post_request(STORAGE, UNITS, TERM, 1, RESERVE)
    assert await sent_by(w, c.address) == before + 1
    assert await allowance(w, c.address) == 2 * ESCROW


async def test_a_permit_signed_for_less_or_by_someone_else_takes_nothing(world: World) -> None:
    w = world
    c = market(w.consumers[0])
    other = market(w.consumers[1])
    terms = (int(STORAGE), UNITS, TERM, 1, 1, RESERVE, ESCROW)
    short = await c.permit_escrow(ESCROW - 1)
    foreign = await other.permit_escrow(ESCROW)

    def post(permit: tuple[int, int, bytes, bytes]) -> Any:
        return c._send(c.auctions, "postWithPermit", [terms, [], *permit], "post")

    await refused(w, InsufficientFunds, "ERC20InsufficientAllowance", lambda: post(short))
    await refused(w, InsufficientFunds, "ERC20InsufficientAllowance", lambda: post(foreign))
    assert await c.request_count() == 0


async def test_a_permit_someone_else_submitted_first_still_posts(world: World) -> None:
    w = world
    c = market(w.consumers[0])
    deadline, v, r, s = await c.permit_escrow(ESCROW)
    house = c.auctions.address
    # anyone may submit a permit seen in flight; the post must not fail because of it
    await w.outsider._send(
        w.outsider.coin, "permit", [c.address, house, ESCROW, deadline, v, r, s], "permit"
    )
    terms = (int(STORAGE), UNITS, TERM, 1, 1, RESERVE, ESCROW)
    await c._send(c.auctions, "postWithPermit", [terms, [], deadline, v, r, s], "post")
    assert await held(w) == ESCROW
    assert await allowance(w, c.address) == 0


async def test_excluded_providers_cannot_bid_and_the_auction_does_not_set_the_price(
    world: World,
) -> None:
    w = world
    c = market(w.consumers[0])
    barred = w.providers[0].address
    outsider_addr = w.outsider.address  # not a provider: excluding it changes nothing else
    rid = await c.post_request(
        STORAGE, UNITS, TERM, 1, RESERVE, exclude=[barred, barred.lower(), outsider_addr]
    )
    info = await c.request(rid)
    assert info.excluded == 2  # duplicates counted once
    assert await c.is_excluded(rid, barred)
    assert not await c.is_excluded(rid, w.providers[1].address)
    await refused(
        w,
        NotAuthorized,
        "ProviderExcluded",
        lambda: market(w.providers[0]).commit_bid(rid, RESERVE, salt("x0")),
    )
    # nor through its operator
    await refused(
        w,
        NotAuthorized,
        "ProviderExcluded",
        lambda: market(w.operators[0]).commit_bid(rid, RESERVE, salt("x0"), barred),
    )
    # a request of 3 storage bidders normally feeds the reference price; 4 providers here
    extra = await _fourth_provider(w)
    prices = [3 * 10**14, 5 * 10**14, 6 * 10**14]
    bidders = [w.providers[1], w.providers[2], extra]
    rid2 = await c.post_request(STORAGE, UNITS, TERM, 1, RESERVE, exclude=[barred])
    for i, who in enumerate(bidders):
        await market(who).commit_bid(rid2, prices[i], salt(f"r{i}"))
    await after_commits(w, rid2)
    for i, who in enumerate(bidders):
        await market(who).reveal_bid(rid2, prices[i], salt(f"r{i}"))
    await after_reveals(w, rid2)
    out = await market(w.outsider).finalize(rid2)
    assert out.status is RequestStatus.CLEARED
    assert [a for a, _ in out.leases] == [w.providers[1].address]
    assert out.price == 5 * 10**14
    assert await c.recent_clearings(STORAGE) == []  # restricted: not kept for the reference
    assert await c.reference_price(STORAGE) is None
    (record,) = [r for _, i, r in cleared_auctions(await auction_events(c, 0)) if i == rid2]
    assert record.restricted
    assert record.staked_bidders == 3


async def _fourth_provider(w: World) -> Ledger:
    d = w.deployer
    who = d.for_account(account_of("provider-extra"))
    await w.conn.fund_gas(who.address, 10**20)
    await d.transfer(who.address, START_NUX)
    await who.register_provider(offer(3), STAKE)
    return who


async def test_exclusions_count_against_the_providers_available(world: World) -> None:
    w = world
    c = market(w.consumers[0])
    three = [p.address for p in w.providers]
    await refused(
        w,
        ProviderUnavailable,
        "NotEnoughProviders",
        lambda: c.post_request(STORAGE, UNITS, TERM, 1, RESERVE, exclude=three),
    )
    await refused(
        w,
        ProviderUnavailable,
        "NotEnoughProviders",
        lambda: c.post_request(STORAGE, UNITS, TERM, 2, RESERVE, exclude=three[:2]),
    )
    many = [Web3.to_checksum_address(f"0x{i:040x}") for i in range(1, MAX_EXCLUDED + 2)]
    await refused(
        w,
        UsageError,
        "",
        lambda: c.post_request(STORAGE, UNITS, TERM, 1, RESERVE, exclude=many),
    )
    await c._ensure_allowance(c.auctions.address, ESCROW)
    terms = (int(STORAGE), UNITS, TERM, 1, 1, RESERVE, ESCROW)
    await refused(
        w,
        InvalidArgument,
        "TooManyExclusions",
        lambda: c._send(c.auctions, "post", [terms, many], "post"),
    )
    assert await c.request_count() == 0


@pytest.mark.parametrize("bad", ["0x12", "not-an-address"])
async def test_an_exclusion_that_is_not_an_address_is_a_usage_error(world: World, bad: str) -> None:
    w = world
    c = market(w.consumers[0])
    await refused(
        w, UsageError, "", lambda: c.post_request(STORAGE, UNITS, TERM, 1, RESERVE, exclude=[bad])
    )
