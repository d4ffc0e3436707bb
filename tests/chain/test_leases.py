"""The lease lifecycle on the real contracts (embedded EVM): positive and negative paths."""

from __future__ import annotations

import pytest

from nuclux.core.lease import LeaseState
from nuclux.core.types import ONE_NUX, ResourceClass
from nuclux.errors import (
    InsufficientFunds,
    InvalidArgument,
    InvalidLeaseState,
    NotAuthorized,
    ProviderUnavailable,
    UsageError,
)
from tests.chain.world import PARAMS, PRICES, World

STORAGE = ResourceClass.STORAGE
EPOCH = PARAMS.epoch_length


async def open_storage(
    w: World,
    units: int = 10,
    term: int = 5,
    escrow: int = ONE_NUX,
    consumer: int = 0,
    provider: int = 0,
) -> int:
    return await w.consumers[consumer].open_lease(
        w.providers[provider].address, STORAGE, units, term, PRICES[0], escrow
    )


async def test_open_locks_escrow_at_posted_price(world: World) -> None:
    c = world.consumers[0]
    before = await c.balance()
    lid = await open_storage(world)
    lease = await c.lease(lid)
    assert lease.state is LeaseState.TICKETED
    assert lease.price == PRICES[0]
    assert lease.escrow == ONE_NUX
    assert await c.balance() == before - ONE_NUX
    assert await c.balance(world.lm_address) == ONE_NUX
    assert lease.deadline == await world.conn.now() + PARAMS.accept_window


async def test_full_lifecycle_pays_exactly(world: World) -> None:
    w = world
    c, p, op = w.consumers[0], w.providers[0], w.operators[0]
    units, escrow = 10, ONE_NUX
    lid = await open_storage(w, units=units, term=5, escrow=escrow)
    await op.accept(lid)  # the hot key accepts
    lease = await c.lease(lid)
    assert lease.state is LeaseState.ACTIVE
    assert lease.end_epoch - lease.start_epoch == 5
    c0, p0 = await c.balance(), await p.balance()

    await w.conn.advance_time(2 * EPOCH)
    claimed = await op.claim(lid)
    per_epoch = units * PRICES[0]
    # two epochs of time travel; a slow machine may see the wall clock cross one more
    elapsed = await w.conn.now() // EPOCH - lease.start_epoch
    assert elapsed in (2, 3)
    assert claimed == elapsed * per_epoch
    assert await p.balance() == p0 + claimed  # paid to the owner (cold) address, not the operator

    await c.extend(lid, 3, ONE_NUX // 2)
    assert (await c.lease(lid)).state is LeaseState.ACTIVE_TICKETED
    await p.accept_extension(lid)
    lease = await c.lease(lid)
    assert lease.state is LeaseState.ACTIVE
    assert lease.end_epoch - lease.start_epoch == 8
    assert lease.escrow == escrow + ONE_NUX // 2

    await c.top_up(lid, ONE_NUX // 4)
    assert (await c.lease(lid)).escrow == escrow + ONE_NUX // 2 + ONE_NUX // 4

    await c.cancel(lid)
    lease = await c.lease(lid)
    assert lease.state is LeaseState.CLOSING
    with pytest.raises(InvalidLeaseState) as err:
        await c.settle(lid)
    assert err.value.error_name == "DisputeWindowOpen"

    await w.conn.advance_time(PARAMS.dispute_window + 1)
    await w.outsider.settle(lid)  # anyone may settle; money goes to the parties
    lease = await c.lease(lid)
    assert lease.state is LeaseState.CLOSED
    epochs_paid = lease.end_epoch - lease.start_epoch
    total_due = epochs_paid * per_epoch
    deposited = escrow + ONE_NUX // 2 + ONE_NUX // 4
    assert await p.balance() == p0 + total_due
    # the consumer paid the extension and top-up after c0 was read, then got the residue back
    assert await c.balance() == c0 - ONE_NUX // 2 - ONE_NUX // 4 + (deposited - total_due)
    assert await c.balance(w.lm_address) == 0


async def test_decline_and_withdraw_refund_in_full(world: World) -> None:
    c = world.consumers[0]
    start = await c.balance()
    a = await open_storage(world)
    b = await open_storage(world)
    await world.operators[0].decline(a)
    await c.cancel(b)  # withdraw a ticket before acceptance
    assert (await c.lease(a)).state is LeaseState.CLOSED
    assert (await c.lease(b)).state is LeaseState.CLOSED
    assert await c.balance() == start


async def test_missed_acceptance_refunds_and_records_fault(world: World) -> None:
    w = world
    lid = await open_storage(w)
    with pytest.raises(InvalidLeaseState, match="DeadlineNotPassed"):
        await w.outsider.expire_ticket(lid)
    await w.conn.advance_time(PARAMS.accept_window + 1)
    with pytest.raises(InvalidLeaseState, match="DeadlinePassed"):
        await w.providers[0].accept(lid)
    await w.outsider.expire_ticket(lid)
    assert (await w.consumers[0].lease(lid)).state is LeaseState.CLOSED
    assert (await w.deployer.provider(w.providers[0].address)).faults == 1


async def test_only_the_right_parties_act(world: World) -> None:
    w = world
    await w.next_epoch()  # no epoch may end before the claim below: nothing is due yet
    lid = await open_storage(w)
    with pytest.raises(NotAuthorized):
        await w.providers[1].accept(lid)  # someone else's lease
    with pytest.raises(NotAuthorized):
        await w.consumers[0].accept(lid)
    await w.providers[0].accept(lid)
    with pytest.raises(NotAuthorized, match="NotConsumer"):
        await w.consumers[1].cancel(lid)
    with pytest.raises(NotAuthorized, match="NotConsumer"):
        await w.providers[0].extend(lid, 1, 0)
    with pytest.raises(InvalidLeaseState, match="NothingToClaim"):
        await w.outsider.claim(lid)  # claims are permissionless; the money goes to the owner
    with pytest.raises(NotAuthorized, match="NotModule"):
        await w.consumers[0].report_fault(lid, b"x")


async def test_transitions_outside_the_table_revert(world: World) -> None:
    w = world
    await w.next_epoch()  # no epoch may end before the claim below: nothing is due yet
    lid = await open_storage(w)
    c, p = w.consumers[0], w.providers[0]
    with pytest.raises(InvalidLeaseState, match="BadState"):
        await c.extend(lid, 1, 0)  # not active yet
    with pytest.raises(InvalidLeaseState, match="BadState"):
        await p.claim(lid)
    with pytest.raises(InvalidLeaseState, match="BadState"):
        await p.accept_extension(lid)
    with pytest.raises(InvalidLeaseState, match="BadState"):
        await w.outsider.end_term(lid)
    await p.accept(lid)
    with pytest.raises(InvalidLeaseState, match="BadState"):
        await p.accept(lid)
    with pytest.raises(InvalidLeaseState, match="TermNotEnded"):
        await w.outsider.end_term(lid)
    with pytest.raises(InvalidLeaseState, match="NothingToClaim"):
        await p.claim(lid)
    with pytest.raises(InvalidLeaseState, match="UnknownLease"):
        await p.accept(9999)


async def test_end_of_term_and_escrow_cap(world: World) -> None:
    w = world
    c, p = w.consumers[0], w.providers[0]
    per_epoch = 10 * PRICES[0]
    escrow = 2 * per_epoch + 7  # covers two epochs and a bit
    lid = await open_storage(w, units=10, term=4, escrow=escrow)
    await p.accept(lid)
    p0, c0 = await p.balance(), await c.balance()
    await w.conn.advance_time(10 * EPOCH)
    await w.outsider.end_term(lid)
    assert await p.claim(lid) == escrow  # capped at escrow, not 4 epochs of entitlement
    await w.conn.advance_time(PARAMS.dispute_window + 1)
    await c.settle(lid)
    assert await p.balance() == p0 + escrow
    assert await c.balance() == c0


async def test_extension_refunds_when_declined_or_expired(world: World) -> None:
    w = world
    c, p = w.consumers[0], w.providers[0]
    lid = await open_storage(w, term=20)
    await p.accept(lid)
    start = await c.balance()
    await c.extend(lid, 2, ONE_NUX)
    await p.decline_extension(lid)
    assert await c.balance() == start
    await c.extend(lid, 2, ONE_NUX)
    with pytest.raises(InvalidLeaseState, match="DeadlineNotPassed"):
        await w.outsider.expire_extension(lid)
    await w.conn.advance_time(PARAMS.accept_window + 1)
    with pytest.raises(InvalidLeaseState, match="DeadlinePassed"):
        await p.accept_extension(lid)
    await w.outsider.expire_extension(lid)
    lease = await c.lease(lid)
    assert lease.state is LeaseState.ACTIVE
    assert lease.ext_escrow == 0
    assert await c.balance() == start


async def test_cancel_during_pending_extension_refunds_it(world: World) -> None:
    w = world
    c, p = w.consumers[0], w.providers[0]
    lid = await open_storage(w, term=20)
    await p.accept(lid)
    await c.extend(lid, 5, ONE_NUX)
    before = await c.balance()
    await c.cancel(lid)
    assert await c.balance() == before + ONE_NUX
    assert (await c.lease(lid)).state is LeaseState.CLOSING


async def test_bad_open_arguments(world: World) -> None:
    w = world
    c = w.consumers[0]
    p = w.providers[0].address
    with pytest.raises(InvalidArgument, match="PriceAboveMax"):
        await c.open_lease(p, STORAGE, 1, 1, PRICES[0] - 1, ONE_NUX)
    with pytest.raises(UsageError):
        await c.open_lease(p, STORAGE, 0, 1, PRICES[0], ONE_NUX)
    with pytest.raises(ProviderUnavailable, match="not registered"):
        await c.open_lease(w.outsider.address, STORAGE, 1, 1, PRICES[0], ONE_NUX)
    with pytest.raises(InsufficientFunds):
        await w.outsider.open_lease(p, STORAGE, 1, 1, PRICES[0], ONE_NUX)  # holds no NuxCoin
    with pytest.raises(UsageError, match="not an Ethereum address"):
        await c.open_lease("0x1234", STORAGE, 1, 1, PRICES[0], ONE_NUX)


async def test_faults_fail_the_lease_and_slash_to_consumer(world: World) -> None:
    w = world
    c, p = w.consumers[0], w.providers[0]
    bw = ResourceClass.BANDWIDTH
    module = w.conn.contract("TestFaultModule", w.deployment.modules["bandwidth"])
    lm = w.lm_address

    async def fault(lid: int) -> None:
        data = module.encode_abi("fault", args=[lm, lid, b"missed-proof".ljust(32, b"\0")])
        await w.conn.queue(w.outsider.account).send({"to": module.address, "data": data})

    leases = []
    for _ in range(2):
        lid = await c.open_lease(p.address, bw, 10, 10, PRICES[2], ONE_NUX)
        await p.accept(lid)
        leases.append(lid)
    await w.conn.advance_time(2 * EPOCH)
    c0, p0 = await c.balance(), await p.balance()
    await fault(leases[0])
    await fault(leases[0])
    assert (await c.lease(leases[0])).state is LeaseState.ACTIVE  # warnings only
    await fault(leases[0])  # third fault on this lease: it fails
    lease = await c.lease(leases[0])
    assert lease.state is LeaseState.FAILED
    failed = await c.lease(leases[0])
    earned = 10 * PRICES[2] * (await w.conn.now() // EPOCH - failed.start_epoch)
    assert earned >= 2 * 10 * PRICES[2]
    assert await p.balance() == p0 + earned
    assert await c.balance() == c0 + ONE_NUX - earned
    info = await w.deployer.provider(p.address)
    assert info.faults == 3
    assert info.suspended_until > await w.conn.now()  # suspended from new leases
    with pytest.raises(ProviderUnavailable, match="suspended"):
        await c.open_lease(p.address, STORAGE, 1, 1, PRICES[0], ONE_NUX)
    # faults four and five: the fifth slashes, capped, paid to the harmed consumer
    await fault(leases[1])
    c1 = await c.balance()
    await fault(leases[1])
    info = await w.deployer.provider(p.address)
    assert info.stake == 200 * ONE_NUX - PARAMS.slash_cap
    assert await c.balance() == c1 + PARAMS.slash_cap


async def test_ticket_flood_cannot_pile_up_faults_or_slash(world: World) -> None:
    w = world
    c, p = w.consumers[0], w.providers[0]
    stake = (await w.deployer.provider(p.address)).stake
    for _ in range(3):
        tickets = [await c.open_lease(p.address, STORAGE, 1, 1, PRICES[0], 1) for _ in range(4)]
        await w.conn.advance_time(PARAMS.accept_window + 1)
        for lid in tickets:
            await w.outsider.expire_ticket(lid)
    info = await w.deployer.provider(p.address)
    assert info.faults == 3  # one per accept window, not twelve
    assert info.stake == stake  # a missed acceptance never slashes


async def test_provider_leaves_only_after_last_dispute_window(world: World) -> None:
    w = world
    p = w.providers[0]
    lid = await open_storage(w, term=2)
    await p.accept(lid)
    await p.leave()
    with pytest.raises(ProviderUnavailable, match="leaving"):
        await open_storage(w)
    await w.conn.advance_time(PARAMS.unbonding_delay + 1)
    await w.outsider.end_term(lid)  # the dispute window starts late, and counts
    with pytest.raises(ProviderUnavailable, match="StillBonded"):
        await p.withdraw_stake()
    await w.conn.advance_time(PARAMS.dispute_window + 1)
    before = await p.balance()
    await p.withdraw_stake()
    assert await p.balance() == before + 200 * ONE_NUX
    assert (await w.deployer.provider(p.address)).status == "none"
