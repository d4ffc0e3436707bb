"""A winner that fails to accept, on the real contracts (embedded EVM): it takes the
missed-acceptance fault and the next-lowest revealed bid gets a Ticketed lease at the same
clearing price with the escrow; when no runner-up is left or can serve, the consumer gets the
escrow back. Nothing stays in the house; the refusals change nothing; a consumer's cancel and
ordinary leases are not affected."""

from __future__ import annotations

from dataclasses import dataclass

from nuclux.chain.market_ledger import RequestStatus
from nuclux.core.lease import LeaseState
from nuclux.core.types import Address, LeaseId, ResourceClass
from nuclux.errors import ContractRevert
from tests.chain.auction_kit import after_commits, after_reveals, held, market, salt
from tests.chain.test_auction import balances, refused
from tests.chain.world import PARAMS, PRICES, World

STORAGE = ResourceClass.STORAGE
RESERVE = 10**15
UNITS, TERM = 10, 4
EACH = UNITS * TERM  # x the clearing price: one lease's escrow


@dataclass
class Cleared:
    rid: int
    price: int
    leases: tuple[tuple[Address, LeaseId], ...]


async def auction(w: World, prices: list[int], m: int = 1) -> Cleared:
    """Post for ``m`` providers; provider i bids ``prices[i]``; clear."""
    # eth-tester stamps the first block after an idle spell with the time the block before it
    # was mined, and the next one with the clock: mine that stale block first, so the commit
    # window is not closed by the time jump between the request and the first bid
    await w.conn.mine()
    rid = await market(w.consumers[0]).post_request(STORAGE, UNITS, TERM, m, RESERVE)
    for i, price in enumerate(prices):
        await market(w.providers[i]).commit_bid(rid, price, salt(f"r{rid}/{i}"))
    await after_commits(w, rid)
    for i, price in enumerate(prices):
        await market(w.providers[i]).reveal_bid(rid, price, salt(f"r{rid}/{i}"))
    await after_reveals(w, rid)
    out = await market(w.outsider).finalize(rid)
    assert out.status is RequestStatus.CLEARED
    return Cleared(rid, out.price, out.leases)


async def faults(w: World, i: int) -> int:
    return (await w.deployer.provider(w.providers[i].address)).faults


async def test_a_declining_winner_is_penalised_and_the_runner_up_takes_its_place(
    world: World,
) -> None:
    w = world
    a = await auction(w, [3 * 10**14, 5 * 10**14, 8 * 10**14])
    assert a.price == 5 * 10**14
    assert await market(w.deployer).runners_up(a.rid) == [
        w.providers[1].address  # at most m = 1 runner-up kept
    ]
    ((winner, lease),) = a.leases
    assert winner == w.providers[0].address
    before = await balances(w)
    await w.operators[0].decline(lease)

    assert await faults(w, 0) == 1  # the missed-acceptance fault
    m = market(w.deployer)
    info = await m.request(a.rid)
    assert info.replacements == 1
    replaced = await m.winner_leases(a.rid)  # the original winner only
    assert replaced == [(winner, lease)]
    new = await w.deployer.lease_count()
    ticket = await w.deployer.lease(new)
    assert ticket.state is LeaseState.TICKETED
    assert ticket.provider == w.providers[1].address
    assert ticket.consumer == w.consumers[0].address
    assert (ticket.price, ticket.escrow, ticket.units) == (a.price, EACH * a.price, UNITS)
    assert await m.request_of_lease(new) == a.rid
    after = await balances(w)
    assert after == before  # the escrow moved from the failed ticket to the new one
    assert await held(w) == 0
    await w.operators[1].accept(new)
    assert (await w.deployer.lease(new)).state is LeaseState.ACTIVE


async def test_an_expired_winner_ticket_goes_to_the_runner_up(world: World) -> None:
    w = world
    a = await auction(w, [3 * 10**14, 5 * 10**14, 8 * 10**14], m=1)
    ((_, lease),) = a.leases
    await w.conn.advance_time(PARAMS.accept_window + 1)
    await w.outsider.expire_ticket(lease)  # anyone
    assert await faults(w, 0) == 1
    ticket = await w.deployer.lease(await w.deployer.lease_count())
    assert ticket.provider == w.providers[1].address
    assert ticket.state is LeaseState.TICKETED
    assert ticket.escrow == EACH * a.price
    assert await held(w) == 0


async def test_runners_up_are_tried_in_rank_order_then_the_consumer_is_refunded(
    world: World,
) -> None:
    w = world
    # m = 2: winners 0 and 1, one runner-up (2)
    a = await auction(w, [2 * 10**14, 3 * 10**14, 4 * 10**14], m=2)
    assert a.price == 4 * 10**14  # the (m+1)-th lowest
    assert [p for p, _ in a.leases] == [w.providers[0].address, w.providers[1].address]
    m = market(w.deployer)
    assert await m.runners_up(a.rid) == [w.providers[2].address]

    await w.operators[0].decline(a.leases[0][1])  # provider 2 takes it
    second = await w.deployer.lease_count()
    assert (await w.deployer.lease(second)).provider == w.providers[2].address

    c0 = await w.deployer.balance(w.consumers[0].address)
    await w.operators[2].decline(second)  # no runner-up left: the consumer is refunded
    assert await w.deployer.lease_count() == second
    assert await w.deployer.balance(w.consumers[0].address) == c0 + EACH * a.price
    assert (await m.request(a.rid)).replacements == 1
    c1 = c0 + EACH * a.price
    await w.operators[1].decline(a.leases[1][1])  # the other winner too: refunded as well
    assert await w.deployer.balance(w.consumers[0].address) == c1 + EACH * a.price
    assert await held(w) == 0
    assert await faults(w, 0) == 1
    assert await faults(w, 1) == 1
    assert await faults(w, 2) == 1


async def test_a_runner_up_that_no_longer_serves_is_skipped(world: World) -> None:
    w = world
    a = await auction(w, [3 * 10**14, 5 * 10**14, 8 * 10**14])
    await w.providers[1].set_paused(True)  # the runner-up stops taking leases
    count = await w.deployer.lease_count()
    c0 = await w.deployer.balance(w.consumers[0].address)
    await w.operators[0].decline(a.leases[0][1])
    assert await w.deployer.lease_count() == count  # nobody else was kept (m = 1)
    assert await w.deployer.balance(w.consumers[0].address) == c0 + EACH * a.price
    assert (await market(w.deployer).request(a.rid)).replacements == 1
    assert await held(w) == 0


async def test_a_consumer_cancelling_its_ticket_is_refunded_without_replacement(
    world: World,
) -> None:
    w = world
    a = await auction(w, [3 * 10**14, 5 * 10**14, 8 * 10**14])
    count = await w.deployer.lease_count()
    c0 = await w.deployer.balance(w.consumers[0].address)
    await w.consumers[0].cancel(a.leases[0][1])
    assert await w.deployer.lease_count() == count
    assert await w.deployer.balance(w.consumers[0].address) == c0 + EACH * a.price
    assert await faults(w, 0) == 0
    assert (await market(w.deployer).request(a.rid)).replacements == 0


async def test_declining_an_ordinary_ticket_is_still_no_fault(world: World) -> None:
    w = world
    lid = await w.consumers[0].open_lease(w.providers[0].address, STORAGE, 1, 2, PRICES[0], 10**18)
    c0 = await w.deployer.balance(w.consumers[0].address)
    await w.operators[0].decline(lid)
    assert await faults(w, 0) == 0
    assert await w.deployer.balance(w.consumers[0].address) == c0 + 10**18
    assert await market(w.deployer).request_of_lease(lid) is None


async def test_only_the_lease_manager_hands_back_tickets(world: World) -> None:
    w = world
    a = await auction(w, [3 * 10**14, 5 * 10**14])
    m = market(w.outsider)

    async def hand_back() -> None:
        await m._send(
            m.auctions,
            "ticketFailed",
            [a.leases[0][1], w.outsider.address, 0],
            "hand back a ticket",
        )

    await refused(w, ContractRevert, "NotLeaseManager", hand_back)
    assert (await m.request(a.rid)).replacements == 0
