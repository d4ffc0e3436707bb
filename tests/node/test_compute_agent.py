"""The lease agent's compute side on the embedded chain: compute tickets accepted while they
fit in the node's compute units and declined beyond them or while draining, extensions
accepted, and the latest co-signed usage submitted to CumulativeSettlement (as it goes while
the lease is live, always in the dispute window), claimed and settled to the wei."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from nuclux.chain.usage import Usage
from nuclux.core.compute_account import UsageUpdate, charge
from nuclux.core.lease import Lease, LeaseState
from nuclux.core.types import ONE_NUX, ResourceClass
from nuclux.core.units import GIB
from nuclux.node.agent import LeaseAgent
from nuclux.node.compute.accounts import ComputeAccounts
from nuclux.node.follower import ChainView
from nuclux.node.store import ShardStore
from tests.chain.world import PARAMS, PRICES, World, offer

COMPUTE = ResourceClass.COMPUTE
TERM = 10


@dataclass
class Node:
    world: World
    view: ChainView
    accounts: ComputeAccounts
    agent: LeaseAgent
    jobs: int = 0

    async def tick(self) -> None:
        await self.view.catch_up()
        await self.agent.tick()

    async def open(self, units: int = 1, escrow: int = ONE_NUX, max_price: int = PRICES[1]) -> int:
        w = self.world
        return await w.consumers[0].open_lease(
            w.providers[0].address, COMPUTE, units, TERM, max_price, escrow
        )

    async def state(self, lease_id: int) -> LeaseState:
        return (await self.world.deployer.lease(lease_id)).state

    async def cosign(self, lease_id: int, fuel: int) -> Usage:
        """Run a job of ``fuel`` on the lease's account and have the consumer pay it: the
        node's account then holds the new revision with both signatures (as the compute
        service leaves it after a countersign)."""
        w = self.world
        lease: Lease = await w.deployer.lease(lease_id)
        acct = self.accounts.open(lease_id, lease.price, lease.units, lease.escrow)
        self.jobs += 1
        job = self.jobs.to_bytes(32, "big")
        acct.admit(job, fuel)
        acct.finish(job, fuel, deterministic=False)
        fuel_paid, total = acct.expected_total((job,))
        update = UsageUpdate(lease_id, acct.state.revision + 1, total, fuel_paid, (job,))
        usage = Usage(lease_id, update.revision, update.cumulative)
        consumer_sig = w.consumers[0].sign_usage(COMPUTE, usage)
        acct.apply(update)
        self.accounts.save(acct, (consumer_sig, w.operators[0].sign_usage(COMPUTE, usage)))
        return usage


@pytest_asyncio.fixture
async def node(world: World, tmp_path: Path) -> AsyncIterator[Node]:
    w = world
    view = ChainView(w.deployer)
    store = await ShardStore.open(tmp_path / "store", 8 * GIB, grace_seconds=60)
    accounts = ComputeAccounts(tmp_path / "compute-accounts.sqlite3")
    agent = LeaseAgent(
        w.providers[0].address,
        w.operators[0],
        view,
        store,
        claim_every=0,
        compute_units=4,
        compute_accounts=accounts,
    )
    try:
        yield Node(w, view, accounts, agent)
    finally:
        accounts.close()
        await store.close()
        view.close()


# ------------------------------------------------------------------ tickets


async def test_compute_tickets_are_accepted_while_they_fit_the_units_offered(node: Node) -> None:
    n, w = node, node.world
    big, one, extra = await n.open(3), await n.open(1), await n.open(1)
    await n.tick()  # one tick: the first two fill the 4 units before the view sees them live
    assert [await n.state(i) for i in (big, one, extra)] == [
        LeaseState.ACTIVE,
        LeaseState.ACTIVE,
        LeaseState.CLOSED,
    ]
    assert (n.agent.stats.accepted, n.agent.stats.declined) == (2, 1)
    assert n.agent.compute.units_in_use(n.view.leases_of_provider(w.providers[0].address)) == 4

    # a lease in its dispute window holds no slots: its units are free for a new ticket
    await w.consumers[0].cancel(big)
    again = await n.open(3)
    too_many = await n.open(2)
    await n.tick()
    assert await n.state(big) is LeaseState.CLOSING
    assert await n.state(again) is LeaseState.ACTIVE
    assert await n.state(too_many) is LeaseState.CLOSED
    assert (n.agent.stats.accepted, n.agent.stats.declined) == (3, 2)


async def test_a_node_without_compute_units_declines_compute_tickets(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    n, w = node, node.world
    n.agent.compute_units = 0
    c0 = await w.consumers[0].balance()
    lid = await n.open(1, escrow=ONE_NUX // 10)
    with caplog.at_level(logging.INFO, logger="nuclux.node.agent"):
        await n.tick()
    assert await n.state(lid) is LeaseState.CLOSED
    assert await w.consumers[0].balance() == c0  # declined: the escrow came back
    assert "offers no compute units" in caplog.text


async def test_a_draining_node_declines_compute_tickets_and_holds_extensions(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    n, w = node, node.world
    live = await n.open(1)
    await n.tick()
    assert await n.state(live) is LeaseState.ACTIVE
    end = (await w.deployer.lease(live)).end_epoch
    ticket = await n.open(1)
    await w.consumers[0].extend(live, 5, ONE_NUX // 10)
    await w.operators[0].set_paused(True, provider=w.providers[0].address)
    with caplog.at_level(logging.INFO, logger="nuclux.node.agent"):
        await n.tick()
    assert n.agent.draining
    assert await n.state(ticket) is LeaseState.CLOSED
    assert f"declining lease {ticket}: draining" in caplog.text
    assert await n.state(live) is LeaseState.ACTIVE_TICKETED  # not accepted while draining
    assert n.agent.stats.extensions == 0

    await w.operators[0].set_paused(False, provider=w.providers[0].address)
    await n.tick()
    lease = await w.deployer.lease(live)
    assert (lease.state, lease.end_epoch) == (LeaseState.ACTIVE, end + 5)
    assert lease.escrow == ONE_NUX + ONE_NUX // 10
    assert n.agent.stats.extensions == 1


# ------------------------------------------------------------------ settlement


async def test_cosigned_usage_is_submitted_claimed_and_settled_to_the_wei(node: Node) -> None:
    n, w = node, node.world
    c, p = w.consumers[0], w.providers[0]
    price = 1_000_000_000_000_007  # wei per million fuel: totals round down once per lease
    await p.update_provider(dataclasses.replace(offer(0), price=(PRICES[0], price, PRICES[2])))
    escrow = ONE_NUX
    lid = await n.open(1, escrow=escrow, max_price=price)
    await n.tick()
    assert (await w.deployer.lease(lid)).price == price
    p0 = await p.balance()
    n.agent.settle_every = 0  # submit every new revision at once

    fuel = [123_456_789, 98_765_433]
    u1 = await n.cosign(lid, fuel[0])
    assert u1.cumulative == charge(fuel[0], price)
    assert fuel[0] * price % 10**6 != 0  # a total that rounds
    await n.tick()  # submits revision 1, then the claim pays it
    assert await w.deployer.latest_usage(COMPUTE, lid) == (1, u1.cumulative)
    assert await p.balance() == p0 + charge(fuel[0], price)

    u2 = await n.cosign(lid, fuel[1])
    await n.tick()
    assert u2.cumulative == charge(sum(fuel), price)
    assert await p.balance() == p0 + charge(sum(fuel), price)

    # the term ends; a job countersigned in the dispute window is still submitted and paid
    await w.conn.advance_time(TERM * PARAMS.epoch_length)
    await w.outsider.end_term(lid)
    n.agent.settle_every = 10**9
    fuel.append(77_777_777)
    u3 = await n.cosign(lid, fuel[2])
    await n.tick()
    assert await n.state(lid) is LeaseState.CLOSING
    assert await w.deployer.latest_usage(COMPUTE, lid) == (3, u3.cumulative)
    total = charge(sum(fuel), price)
    assert u3.cumulative == total
    assert await p.balance() == p0 + total

    c0 = await c.balance()
    await w.conn.advance_time(PARAMS.dispute_window + 1)
    await n.tick()  # the agent settles: the consumer gets the rest of the escrow
    assert await n.state(lid) is LeaseState.CLOSED
    assert n.agent.stats.settled == 1
    assert await c.balance() == c0 + escrow - total
    assert await p.balance() == p0 + total
    assert n.agent.compute.stats.submitted == 3
    assert n.agent.stats.claimed_wei == total


async def test_a_live_lease_is_submitted_every_settle_every_a_closing_one_at_once(
    node: Node,
) -> None:
    n, w = node, node.world
    now = [1000.0]
    n.agent.compute.clock = lambda: now[0]
    n.agent.settle_every = 60
    lid = await n.open(1)
    await n.tick()
    await n.cosign(lid, 1_000_000)
    await n.tick()  # first sight: submitted at once
    assert await w.deployer.latest_usage(COMPUTE, lid) == (1, charge(1_000_000, PRICES[1]))

    await n.cosign(lid, 2_000_000)
    now[0] += 59
    await n.tick()
    assert (await w.deployer.latest_usage(COMPUTE, lid))[0] == 1  # too soon
    now[0] += 1
    await n.tick()
    assert await w.deployer.latest_usage(COMPUTE, lid) == (2, charge(3_000_000, PRICES[1]))

    await n.cosign(lid, 4_000_000)
    await n.tick()
    assert (await w.deployer.latest_usage(COMPUTE, lid))[0] == 2
    await w.consumers[0].cancel(lid)
    await n.tick()  # Closing: the dispute window is the last chance, no waiting
    assert await w.deployer.latest_usage(COMPUTE, lid) == (3, charge(7_000_000, PRICES[1]))
    assert n.agent.compute.stats.submitted == 3


async def test_a_refused_submission_is_logged_and_not_retried(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    n, w = node, node.world
    c = w.consumers[0]
    n.agent.settle_every = 0
    lid = await n.open(1)
    await n.tick()
    await n.cosign(lid, 1_000_000)
    await n.tick()
    assert n.agent.compute.stats.submitted == 1

    # the consumer puts revision 2 on chain first: the agent's attempt is refused as stale
    await n.cosign(lid, 1_000_000)
    latest = n.accounts.cosigned(lid)
    assert latest is not None
    await c.submit_usage(
        COMPUTE, latest.usage, latest.consumer_signature, latest.provider_signature
    )
    with caplog.at_level(logging.WARNING, logger="nuclux.node.agent"):
        await n.tick()
    assert "refused" in caplog.text
    assert "StaleRevision" in caplog.text
    assert (n.agent.compute.stats.submitted, n.agent.compute.stats.refused) == (1, 1)
    await n.tick()
    await n.tick()
    assert (n.agent.compute.stats.submitted, n.agent.compute.stats.refused) == (1, 1)

    # a newer revision goes through again
    await n.cosign(lid, 1_000_000)
    await n.tick()
    assert await w.deployer.latest_usage(COMPUTE, lid) == (3, charge(3_000_000, PRICES[1]))
    assert (n.agent.compute.stats.submitted, n.agent.compute.stats.refused) == (2, 1)


async def test_what_the_chain_already_holds_is_not_submitted_again(node: Node) -> None:
    n, w = node, node.world
    lid = await n.open(1)
    await n.tick()
    u = await n.cosign(lid, 5_000_000)
    latest = n.accounts.cosigned(lid)
    assert latest is not None
    await w.consumers[0].submit_usage(
        COMPUTE, u, latest.consumer_signature, latest.provider_signature
    )
    await n.tick()  # first sight: the agent reads revision 1 from the chain
    assert (n.agent.compute.stats.submitted, n.agent.compute.stats.refused) == (0, 0)
    assert n.agent.stats.claimed_wei == charge(5_000_000, PRICES[1])
