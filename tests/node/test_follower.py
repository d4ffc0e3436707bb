"""ChainView on the embedded chain: equal to the chain after a lease lifecycle and registry
changes, only touched records re-read, restart from the same file, a deep reorg rebuilds the
view, the run loop survives RPC failures, and a sync of 200 lease events is fast."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from eth_account.signers.local import LocalAccount

from nuclux.chain import ChainConnection, Deployment, Ledger
from nuclux.chain.ledger import LoggedEvent, ProviderInfo
from nuclux.core.lease import Lease, LeaseState
from nuclux.core.types import ONE_NUX, ResourceClass
from nuclux.errors import ChainUnavailable, ConfigError, UsageError
from nuclux.node.follower import ChainView
from tests.chain import world as chain_world
from tests.chain.world import PARAMS, World, build_world, offer

STORAGE, COMPUTE, BANDWIDTH = ResourceClass.STORAGE, ResourceClass.COMPUTE, ResourceClass.BANDWIDTH
ESCROW = 10 * ONE_NUX


@pytest_asyncio.fixture(scope="module")
async def deployed() -> AsyncIterator[World]:
    conn = await ChainConnection.open("embedded")
    yield await build_world(conn)
    await conn.close()


@pytest_asyncio.fixture
async def world(deployed: World) -> AsyncIterator[World]:
    """The deployed world, reverted to its first state after each test."""
    snap = await deployed.conn.snapshot()
    yield deployed
    await deployed.conn.revert(snap)


class CountingLedger(Ledger):
    """Records every state read the view makes; can fail its log queries a few times."""

    def __init__(self, conn: ChainConnection, dep: Deployment, account: LocalAccount) -> None:
        super().__init__(conn, dep, account)
        self.lease_reads: list[int] = []
        self.provider_reads: list[str] = []
        self.failures_left = 0

    async def lease_at(self, lease_id: int, block: int) -> Lease | None:
        self.lease_reads.append(lease_id)
        return await super().lease_at(lease_id, block)

    async def provider_at(self, address: str, block: int) -> ProviderInfo | None:
        self.provider_reads.append(address)
        return await super().provider_at(address, block)

    async def registry_events(self, from_block: int, to_block: int) -> list[LoggedEvent]:
        if self.failures_left > 0:
            self.failures_left -= 1
            raise ChainUnavailable("injected: the RPC endpoint is down")
        return await super().registry_events(from_block, to_block)

    def reset(self) -> None:
        self.lease_reads.clear()
        self.provider_reads.clear()


def reader(w: World) -> CountingLedger:
    return CountingLedger(w.conn, w.deployment, chain_world.test_account("reader"))


async def assert_matches_chain(view: ChainView, w: World) -> None:
    """Every lease and provider of the view equals a fresh read from the chain's head."""
    chain = reader(w)
    assert view.synced_block == await w.conn.block_number()
    header = await chain.block_header(view.synced_block)
    assert header is not None
    assert view.chain_time == header.timestamp
    assert view.epoch == header.timestamp // PARAMS.epoch_length
    leases = [await chain.lease(i) for i in range(1, await chain.lease_count() + 1)]
    for lease in leases:
        assert view.lease(lease.id) == lease
    assert view.lease(len(leases) + 1) is None
    people = [*w.providers, *w.consumers, *w.operators, w.outsider]
    for who in people:
        info = await chain.provider(who.address)
        registered = info if info.status != "none" else None
        assert view.provider(who.address) == registered
        assert view.fingerprint_of(who.address) == (registered and registered.cert_fingerprint)
        assert view.leases_of_provider(who.address) == [
            x for x in leases if x.provider == who.address
        ]
        assert view.leases_of_consumer(who.address) == [
            x for x in leases if x.consumer == who.address
        ]
        bound = await chain._call(chain.registry, "providerOfOperator", who.address)
        owner = view.provider_for_operator(who.address)
        assert (owner.owner if owner else "0x" + "0" * 40) == bound


async def test_view_equals_chain_after_lifecycle_and_registry_changes(world: World) -> None:
    w = world
    (p0, p1, p2), (c0, c1), (op0, op1, op2) = w.providers, w.consumers, w.operators
    view = ChainView(reader(w))
    assert (view.synced_block, view.chain_time) == (w.deployment.block - 1, 0)
    first = await view.sync()
    assert (first.first, first.caught_up, first.reorg) == (w.deployment.block, True, None)
    assert (first.providers_read, first.leases_read) == (3, 0)
    await assert_matches_chain(view, w)

    a = await c0.open_lease(p0.address, STORAGE, 10, 5, 10**18, ESCROW)
    await op0.accept(a)
    await c0.extend(a, 2, ONE_NUX)
    await op0.accept_extension(a)
    b = await c1.open_lease(p1.address, COMPUTE, 2, 3, 10**18, ESCROW)
    await op1.decline(b)
    c = await c0.open_lease(p2.address, BANDWIDTH, 1, 2, 10**18, ESCROW)
    await c0.cancel(c)  # a ticket withdrawn: closed, refunded
    d = await c1.open_lease(p0.address, STORAGE, 5, 4, 10**18, ESCROW)
    await op0.accept(d)
    await c1.top_up(d, ONE_NUX)
    await view.sync()
    await assert_matches_chain(view, w)
    assert view.leases_of_provider(p0.address, [LeaseState.ACTIVE]) == [
        view.lease(a),
        view.lease(d),
    ]

    await w.conn.advance_time(2 * PARAMS.epoch_length)
    await p0.claim(d)
    await c1.cancel(d)
    await w.conn.advance_time(PARAMS.dispute_window + 1)
    await c1.settle(d)
    await c0.open_lease(p1.address, STORAGE, 1, 1, 10**18, ESCROW)  # left ticketed
    await p1.set_paused(True)
    await p1.leave()
    await p2.update_provider(offer(7))
    await p2.set_operator(w.outsider.address)
    await view.sync()
    await assert_matches_chain(view, w)
    closed = view.lease(d)
    assert closed is not None
    assert closed.state == LeaseState.CLOSED
    assert view.provider_for_operator(op2.address) is None
    assert view.provider_for_operator(w.outsider.address) == view.provider(p2.address)

    await w.conn.advance_time(PARAMS.unbonding_delay + 1)
    await p1.withdraw_stake()  # the registry forgets p1 entirely
    await view.sync()
    await assert_matches_chain(view, w)
    assert view.provider(p1.address) is None
    assert view.fingerprint_of(p1.address) is None


async def test_only_touched_records_are_read(world: World) -> None:
    w = world
    (p0, p1, _), (c0, _c1), (op0, _, _) = w.providers, w.consumers, w.operators
    ledger = reader(w)
    view = ChainView(ledger)
    a = await c0.open_lease(p0.address, STORAGE, 10, 5, 10**18, ESCROW)
    b = await c0.open_lease(p1.address, STORAGE, 10, 5, 10**18, ESCROW)
    await view.sync()
    assert sorted(ledger.lease_reads) == [a, b]

    ledger.reset()
    await op0.accept(a)  # the lease, and its provider (whose release time moved)
    report = await view.sync()
    assert (ledger.lease_reads, ledger.provider_reads) == ([a], [p0.address])
    assert (report.leases_read, report.providers_read, report.events) == (1, 1, 1)

    ledger.reset()
    await c0.top_up(a, ONE_NUX)
    await p1.update_provider(offer(5))
    report = await view.sync()
    assert (ledger.lease_reads, ledger.provider_reads) == ([a], [p1.address])

    ledger.reset()
    await w.conn.mine()
    report = await view.sync()  # blocks without Nuclux events: nothing read
    assert report.first is not None
    assert (ledger.lease_reads, ledger.provider_reads) == ([], [])
    await assert_matches_chain(view, w)


async def test_restart_continues_from_the_cursor(world: World, tmp_path: Path) -> None:
    w = world
    path = tmp_path / "view.sqlite"
    p0, c0, op0 = w.providers[0], w.consumers[0], w.operators[0]
    a = await c0.open_lease(p0.address, STORAGE, 10, 5, 10**18, ESCROW)
    with ChainView(reader(w), path) as view:
        await view.sync()
        cursor, time_then = view.synced_block, view.chain_time
    await op0.accept(a)
    b = await c0.open_lease(p0.address, COMPUTE, 1, 5, 10**18, ESCROW)
    ledger = reader(w)
    with ChainView(ledger, path) as again:
        assert (again.synced_block, again.chain_time) == (cursor, time_then)
        old = again.lease(a)
        assert old is not None
        assert old.state == LeaseState.TICKETED
        assert again.lease(b) is None
        report = await again.sync()
        assert (report.first, report.reorg) == (cursor + 1, None)
        assert sorted(ledger.lease_reads) == [a, b]
        await assert_matches_chain(again, w)
    with pytest.raises(ConfigError, match="start_block"):
        ChainView(reader(w), path, start_block=0)


async def test_a_reorg_deeper_than_the_window_rebuilds_the_view(world: World) -> None:
    w = world
    p0, c0, op0 = w.providers[0], w.consumers[0], w.operators[0]
    view = ChainView(reader(w), window=2)
    await view.sync()
    snap = await w.conn.snapshot()
    gone = await c0.open_lease(p0.address, STORAGE, 10, 5, 10**18, ESCROW)
    for _ in range(3):
        await op0.update_provider(offer(8), provider=p0.address)
        await view.sync()  # the window keeps only the last blocks
    assert view.lease(gone) is not None
    await w.conn.revert(snap)
    kept = await c0.open_lease(p0.address, COMPUTE, 3, 2, 10**18, ESCROW)
    assert kept == gone  # the same id, a different lease
    report = await view.sync()
    assert report.reorg is not None
    assert report.reorg.resynced
    await assert_matches_chain(view, w)
    new = view.lease(kept)
    assert new is not None
    assert new.cls == COMPUTE
    assert view.provider(p0.address) == await reader(w).provider(p0.address)


async def test_an_idle_step_is_one_call_and_a_reorg_at_the_same_height_is_seen(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = world
    p0, c0 = w.providers[0], w.consumers[0]
    chain = reader(w)
    view = ChainView(chain)
    await view.sync()
    calls: list[str] = []
    header, number = chain.block_header, w.conn.block_number

    async def counted_header(block: Any = "latest") -> Any:
        calls.append(f"header {block}")
        return await header(block)

    async def counted_number() -> int:
        calls.append("number")
        return await number()

    monkeypatch.setattr(chain, "block_header", counted_header)
    monkeypatch.setattr(w.conn, "block_number", counted_number)
    report = await view.sync()
    assert (report.first, report.reorg, calls) == (None, None, ["header latest"])
    snap = await w.conn.snapshot()
    gone = await c0.open_lease(p0.address, STORAGE, 10, 5, 10**18, ESCROW)
    await view.sync()
    assert view.lease(gone) is not None
    height = view.synced_block
    await w.conn.revert(snap)
    kept = await c0.open_lease(p0.address, COMPUTE, 3, 2, 10**18, ESCROW)
    assert kept == gone
    assert await number() == height  # the head has the same number, another block
    report = await view.sync()
    assert report.reorg is not None
    await assert_matches_chain(view, w)
    new = view.lease(kept)
    assert new is not None
    assert new.cls == COMPUTE


async def test_run_survives_rpc_failures_and_wakes_for_waiters(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    w = world
    ledger = reader(w)
    view = ChainView(ledger)
    await view.sync()
    ledger.failures_left = 2
    stop = asyncio.Event()
    caplog.set_level(logging.WARNING, logger="nuclux.node.follower")
    task = asyncio.create_task(view.run(stop, poll_interval=0.02, max_backoff=0.05))
    await asyncio.sleep(0)  # let the loop start: waiters then rely on it instead of syncing
    try:
        lease_id = await w.consumers[0].open_lease(
            w.providers[0].address, STORAGE, 1, 1, 10**18, ESCROW
        )
        mined = await w.conn.block_number()
        assert await view.wait_for_block(mined, timeout=5.0)
        assert view.lease(lease_id) == await ledger.lease(lease_id)
        assert not await view.wait_for_block(mined + 1000, timeout=0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5.0)
    assert ledger.failures_left == 0
    assert sum("sync failed (ChainUnavailable" in r.getMessage() for r in caplog.records) == 2


async def test_wait_for_block_syncs_without_a_run_loop(world: World) -> None:
    view = ChainView(reader(world))
    target = await world.conn.block_number()
    assert await view.wait_for_block(target, timeout=5.0)
    assert view.synced_block == target
    assert not await view.wait_for_block(target + 50, timeout=0.1)


async def test_reads_check_their_arguments(world: World) -> None:
    view = ChainView(reader(world))
    with pytest.raises(UsageError, match="not an Ethereum address"):
        view.provider("nobody")
    assert view.lease(0) is None
    assert view.lease(2**200) is None
    with pytest.raises(UsageError):
        ChainView(reader(world), confirmations=0)


async def send_raw(w: World, account: LocalAccount, calls: list[str]) -> None:
    """Send ``calls`` to the LeaseManager back to back: no estimation, no receipt polling
    (eth-tester mines each at once and raises on a revert)."""
    nonce = await w.conn.w3.eth.get_transaction_count(account.address)
    for i, data in enumerate(calls):
        tx: dict[str, Any] = {"to": w.lm_address, "data": data, "nonce": nonce + i}
        tx |= {"gas": 400_000, "chainId": w.conn.chain_id}
        tx |= {"maxFeePerGas": 10**11, "maxPriorityFeePerGas": 1}
        await w.conn.w3.eth.send_raw_transaction(account.sign_transaction(tx).raw_transaction)


async def test_syncing_200_lease_events_in_one_batch(world: World) -> None:
    """One sync step takes in a batch of 200+ events and reads each touched lease once.
    (Its speed is a figure for a benchmark, not a timed assertion.)"""
    w = world
    p0, consumer = w.providers[0], w.consumers[0]
    await consumer._ensure_allowance(w.lm_address, 100 * ONE_NUX)  # one approval for all
    first_id = await consumer.lease_count() + 1
    ids = list(range(first_id, first_id + 100))
    lm = consumer.leases
    opened = [lm.encode_abi("openLease", args=[p0.address, 0, 1, 5, 10**18, ONE_NUX])] * 100
    await send_raw(w, consumer.account, opened)
    await send_raw(w, w.operators[0].account, [lm.encode_abi("accept", args=[i]) for i in ids])
    view = ChainView(reader(w))
    report = await view.sync()
    assert report.events >= 200
    assert report.leases_read == 100
    active = view.leases_of_provider(p0.address, [LeaseState.ACTIVE])
    assert [x.id for x in active] == ids
    assert active[-1] == await w.deployer.lease(ids[-1])


async def test_embedded_log_reader_agrees_with_eth_getlogs(world: World) -> None:
    w = world
    a = await w.consumers[0].open_lease(w.providers[0].address, STORAGE, 1, 2, 10**18, ESCROW)
    await w.operators[0].accept(a)
    await w.providers[1].update_provider(offer(4))
    head = await w.conn.block_number()
    fast = await w.deployer.registry_events(0, head)
    slow = [e for e in await w.deployer.events(0, head) if e.name not in ("Transfer", "Approval")]
    assert [(e.name, e.args, e.block, e.log_index) for e in fast] == [
        (e.name, e.args, e.block, e.log_index) for e in slow
    ]
    assert {e.contract for e in fast} == {"LeaseManager", "ProviderRegistry"}
    for e in fast:
        header = await w.deployer.block_header(e.block)
        assert header is not None
        assert e.block_hash == header.hash
