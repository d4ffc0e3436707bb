"""ChainView against a real anvil node over JSON-RPC: a reorg (evm_snapshot, operations,
evm_revert, other operations) leaves the view equal to the new canonical chain; confirmations
hold the view back and a reorg shallower than them is never seen; catching up past the
node's pruned state extends the step to the head."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import pytest_asyncio

from nuclux.chain import ChainConnection, Deployment, DeployParams, Ledger, deploy
from nuclux.chain.anvil import KEPT_STATES
from nuclux.chain.devnet import AnvilProcess, dev_account, find_anvil
from nuclux.chain.ledger import ProviderOffer
from nuclux.core.lease import LeaseState
from nuclux.core.types import ONE_NUX, ResourceClass
from nuclux.node.follower import ChainView
from tests.chain.heads_kit import counting

pytestmark = pytest.mark.anvil

PARAMS = DeployParams(epoch_length=60, accept_window=300, dispute_window=300)
PROVIDER, CONSUMER, READER = 1, 2, 9
ESCROW = 10 * ONE_NUX
STORAGE, COMPUTE = ResourceClass.STORAGE, ResourceClass.COMPUTE


def offer(endpoint: str) -> ProviderOffer:
    return ProviderOffer(endpoint, b"\1" * 32, b"\2" * 32, (100, 4, 1000), (10**15,) * 3)


@dataclass
class Chain:
    conn: ChainConnection
    deployment: Deployment

    def ledger(self, index: int) -> Ledger:
        return Ledger(self.conn, self.deployment, dev_account(index))


@pytest_asyncio.fixture(scope="module")
async def chain(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Chain]:
    node = AnvilProcess(tmp_path_factory.mktemp("anvil"), binary=find_anvil())
    await node.start(timeout=20)
    try:
        async with await ChainConnection.open(node.rpc_url, tx_timeout=30) as conn:
            deployment = await deploy(conn, dev_account(0), PARAMS)
            c = Chain(conn, deployment)
            faucet = c.ledger(0)
            await asyncio.gather(*(faucet.transfer(dev_account(i).address, 10**22) for i in (1, 2)))
            await c.ledger(PROVIDER).register_provider(
                offer("https://127.0.0.1:9000"), 100 * ONE_NUX
            )
            yield c
    finally:
        await node.stop(timeout=10)
    assert not node.running


async def assert_matches(view: ChainView, c: Chain, block: int) -> None:
    """The view is at ``block`` and every record equals the chain's state there."""
    assert view.synced_block == block
    chain = c.ledger(READER)
    count = int(await chain._call_at(chain.leases, "leaseCount", block))
    for lease_id in range(1, count + 3):
        assert view.lease(lease_id) == await chain.lease_at(lease_id, block)
    for index in (PROVIDER, CONSUMER, READER):
        address = dev_account(index).address
        assert view.provider(address) == await chain.provider_at(address, block)
    header = await chain.block_header(block)
    assert header is not None
    assert view.chain_time == header.timestamp


async def test_reorg_leaves_the_view_on_the_new_canonical_chain(chain: Chain) -> None:
    provider, consumer, conn = chain.ledger(PROVIDER), chain.ledger(CONSUMER), chain.conn
    view = ChainView(chain.ledger(READER))
    await view.catch_up()
    before = await conn.block_number()
    first_id = await consumer.lease_count() + 1
    snap = await conn.snapshot()

    a = await consumer.open_lease(provider.address, STORAGE, 10, 5, 10**18, ESCROW)
    b = await consumer.open_lease(provider.address, STORAGE, 20, 5, 10**18, ESCROW)
    await provider.accept(a)
    await provider.update_provider(offer("https://127.0.0.1:9999"))
    report = await view.sync()
    assert report.reorg is None
    await assert_matches(view, chain, await conn.block_number())
    seen = view.lease(a)
    assert seen is not None
    assert seen.state == LeaseState.ACTIVE
    assert (a, b) == (first_id, first_id + 1)
    assert view.leases_of_consumer(consumer.address)[-2:] == [view.lease(a), view.lease(b)]

    await conn.revert(snap)  # the four operations above are gone
    other = await consumer.open_lease(provider.address, COMPUTE, 3, 2, 10**18, ESCROW)
    assert other == a  # the same id, a different lease
    report = await view.sync()
    assert report.reorg is not None
    assert report.reorg.fork_block == before
    assert report.reorg.marked_dirty >= 3  # two leases and the provider
    assert not report.reorg.resynced
    await assert_matches(view, chain, await conn.block_number())
    replaced = view.lease(a)
    assert replaced is not None
    assert (replaced.cls, replaced.state) == (COMPUTE, LeaseState.TICKETED)
    assert view.lease(b) is None
    p = view.provider(provider.address)
    assert p is not None
    assert p.endpoint == "https://127.0.0.1:9000"


async def test_confirmations_hold_the_view_back_and_hide_shallow_reorgs(chain: Chain) -> None:
    provider, consumer, conn = chain.ledger(PROVIDER), chain.ledger(CONSUMER), chain.conn
    view = ChainView(chain.ledger(READER), confirmations=3)
    await view.catch_up()
    assert view.synced_block == await conn.block_number() - 2

    a = await consumer.open_lease(provider.address, STORAGE, 1, 5, 10**18, ESCROW)
    mined = await conn.block_number()
    await view.sync()
    assert view.synced_block == mined - 2
    assert view.lease(a) is None  # mined, but not 3 blocks deep yet
    await conn.mine()
    await conn.mine()
    await view.sync()
    assert view.synced_block == mined
    assert view.lease(a) == await consumer.lease(a)

    snap = await conn.snapshot()
    b = await consumer.open_lease(provider.address, STORAGE, 2, 5, 10**18, ESCROW)
    await view.sync()
    assert view.lease(b) is None
    await conn.revert(snap)  # drops blocks the view never took
    for _ in range(3):
        await conn.mine()
    report = await view.sync()
    assert report.reorg is None
    await assert_matches(view, chain, await conn.block_number() - 2)
    assert view.lease(b) is None


async def test_catching_up_past_pruned_state_extends_to_the_head(chain: Chain) -> None:
    provider, consumer, conn = chain.ledger(PROVIDER), chain.ledger(CONSUMER), chain.conn
    view = ChainView(chain.ledger(READER), max_range=10)
    await view.catch_up()
    a = await consumer.open_lease(provider.address, STORAGE, 1, 5, 10**18, ESCROW)
    await conn._dev_rpc("anvil_mine", [hex(KEPT_STATES + 40)])  # the lease's state is pruned
    report = await view.sync()
    assert report.extended
    assert report.caught_up
    await assert_matches(view, chain, await conn.block_number())
    assert view.lease(a) == await consumer.lease(a)


async def test_a_revert_with_nothing_mined_since_rewinds_to_the_fork(chain: Chain) -> None:
    provider, consumer, conn = chain.ledger(PROVIDER), chain.ledger(CONSUMER), chain.conn
    view = ChainView(chain.ledger(READER))
    await view.catch_up()
    before = await conn.block_number()
    snap = await conn.snapshot()
    a = await consumer.open_lease(provider.address, STORAGE, 1, 5, 10**18, ESCROW)
    await view.sync()
    assert view.lease(a) is not None
    await conn.revert(snap)  # the chain is now shorter than the view's cursor
    report = await view.sync()
    assert report.reorg is not None
    assert report.reorg.fork_block == before
    assert (report.first, report.leases_read, report.providers_read) == (None, 1, 1)
    await assert_matches(view, chain, before)
    assert view.lease(a) is None


async def test_with_pushed_heads_a_running_view_reads_new_blocks_at_once(chain: Chain) -> None:
    """A view following pushed heads (``nuclux.chain.heads``) with a 30 s poll: a new lease
    is in it within seconds, and while nothing happens it sends no head request at all."""
    provider, consumer = chain.ledger(PROVIDER), chain.ledger(CONSUMER)
    async with await ChainConnection.open(chain.conn.url) as conn:
        assert await conn.follow_heads()
        view = ChainView(Ledger(conn, chain.deployment, dev_account(READER)))
        await view.catch_up()
        sent = counting(conn)
        stop = asyncio.Event()
        running = asyncio.create_task(view.run(stop, poll_interval=30))
        try:
            await asyncio.sleep(1.0)
            assert sent == []  # idle: the pushed header matches the cursor
            lid = await consumer.open_lease(provider.address, STORAGE, 1, 5, 10**18, ESCROW)
            async with asyncio.timeout(5):  # not the 30 s poll
                while view.lease(lid) is None:  # its blocks may have been read already
                    await view.progress.wait()
            assert view.lease(lid) == await consumer.lease(lid)
        finally:
            stop.set()
            await asyncio.wait_for(running, 10)
            view.close()
