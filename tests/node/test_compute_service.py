"""The node's compute API end to end on loopback: real TLS, the embedded chain, a real pool
of wasmtime workers; jobs under a compute lease, receipts, countersigned usage that settles on
chain to the wei, and every refusal of docs/spec/compute-protocol.md."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp import web

from nuclux.chain.usage import Usage
from nuclux.core.auth import ReplayGuard, RequestVerifier
from nuclux.core.compute_account import (
    CountersignRequired,
    EscrowExhausted,
    UsageRejected,
    UsageUpdate,
    charge,
)
from nuclux.core.job import JobRejected, JobSpec, make_job_spec, verify_receipt
from nuclux.core.types import ONE_NUX, ResourceClass
from nuclux.core.units import GIB
from nuclux.errors import Forbidden, Unauthenticated
from nuclux.net.client import NodeClient
from nuclux.net.compute_client import ComputeNode
from nuclux.net.tls import NodeIdentity, server_ssl_context
from nuclux.node.compute.service import ComputeService, start_compute
from nuclux.node.follower import ChainView
from nuclux.node.server import NodeService
from nuclux.node.store import ShardStore
from tests.chain.world import PRICES, World
from tests.compute.conftest import EXAMPLES, SMALL, TEST_LIMITS

WC = (EXAMPLES / "wc.wasm").read_bytes()
LIMITS = SMALL
PRICE = PRICES[1]


@dataclass
class Computed:
    world: World
    service: NodeService
    compute: ComputeService
    view: ChainView
    identity: NodeIdentity
    url: str
    lease: int
    clients: list[NodeClient] = field(default_factory=list)

    def node(self, who: int = 0) -> ComputeNode:
        key = bytes(self.world.consumers[who].account.key)
        client = NodeClient(self.url, self.identity.fingerprint, key)
        self.clients.append(client)
        return ComputeNode(client)

    async def open_lease(self, units: int = 1, escrow: int = 10 * ONE_NUX) -> int:
        w = self.world
        lid = await w.consumers[0].open_lease(
            w.providers[0].address, ResourceClass.COMPUTE, units, 10, PRICE, escrow
        )
        await w.operators[0].accept(lid)
        return lid


@pytest_asyncio.fixture
async def computed(world: World, tmp_path: Path) -> AsyncIterator[Computed]:
    w = world
    provider = w.providers[0]
    lid = await w.consumers[0].open_lease(
        provider.address, ResourceClass.COMPUTE, 1, 10, PRICE, 10 * ONE_NUX
    )
    await w.operators[0].accept(lid)
    view = ChainView(w.deployer)
    await view.catch_up()
    identity = NodeIdentity.generate(provider.address)
    store = await ShardStore.open(tmp_path / "store", GIB, grace_seconds=60)
    service = NodeService(
        owner=provider.address,
        operator=w.operators[0].address,
        fingerprint=identity.fingerprint,
        chain_id=w.conn.chain_id,
        store=store,
        view=view,
        verifier=RequestVerifier(identity.fingerprint, ReplayGuard(120)),
    )

    async def refresh() -> None:
        await view.catch_up()

    service.refresh_fn = refresh
    compute = await start_compute(
        2,
        tmp_path,
        w.operators[0],
        verifier=service.verifier,
        lease_for=service.fresh_lease,
        clock=service.clock,
        limits=TEST_LIMITS,
    )
    service.compute = compute
    runner = service.runner()
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context(identity))
    await site.start()
    port = runner.addresses[0][1]
    c = Computed(w, service, compute, view, identity, f"https://127.0.0.1:{port}", lid)
    try:
        yield c
    finally:
        for client in c.clients:
            await client.close()
        await runner.cleanup()
        await compute.close()
        await store.close()
        view.close()


def wc_job(text: bytes, *, deterministic: bool = False) -> tuple[JobSpec, dict[str, bytes]]:
    inputs = {"words.txt": text}
    spec = make_job_spec(
        WC,
        inputs,
        ["/in/words.txt"],
        limits=LIMITS,
        deterministic=deterministic,
        nonce=os.urandom(16),
    )
    return spec, inputs


async def countersign(
    c: Computed,
    node: ComputeNode,
    lease: int,
    jobs: list[bytes],
    declined: tuple[bytes, ...] = (),
    revision: int = 1,
    fuel_before: int = 0,
) -> tuple[UsageUpdate, bytes, bytes]:
    account = await node.account(lease)
    fuel = fuel_before + sum(account.pending[j].fuel_used for j in jobs)
    update = UsageUpdate(lease, revision, charge(fuel, PRICE), fuel, tuple(jobs), declined)
    usage = Usage(lease, revision, update.cumulative)
    sig = c.world.consumers[0].sign_usage(ResourceClass.COMPUTE, usage)
    return update, sig, await node.countersign(update, sig)


async def test_a_job_runs_is_receipted_countersigned_and_settles_to_the_wei(
    computed: Computed,
) -> None:
    c = computed
    node = c.node()
    spec, inputs = wc_job(b"one two three\nfour\n")
    result, receipt = await node.run(c.lease, spec, WC, inputs)
    assert result.ok
    assert result.stdout.split()[:3] == [b"2", b"4", b"19"]
    verify_receipt(receipt, c.world.operators[0].address)
    assert receipt.fuel_used == result.fuel_used > 0
    account = await node.account(c.lease)
    assert list(account.pending) == [spec.job_id]
    update, consumer_sig, provider_sig = await countersign(c, node, c.lease, [spec.job_id])
    assert update.cumulative == result.fuel_used * PRICE // 10**6 > 0
    usage = Usage(c.lease, 1, update.cumulative)
    assert c.compute.usage_signer.signer_of(usage, provider_sig) == c.world.operators[0].address
    after = await node.account(c.lease)
    assert after.state.revision == 1
    assert not after.pending
    assert after.consumer_signature == consumer_sig
    assert after.provider_signature == provider_sig
    # the co-signed total is what the chain pays: the provider submits it and claims it
    op = c.world.operators[0]
    saved = c.compute.accounts.cosigned(c.lease)
    assert saved is not None
    assert saved.usage == usage
    await op.submit_usage(ResourceClass.COMPUTE, usage, consumer_sig, provider_sig)
    assert await op.latest_usage(ResourceClass.COMPUTE, c.lease) == (1, update.cumulative)
    before = await op.balance(c.world.providers[0].address)
    paid = await c.world.providers[0].claim(c.lease)
    assert paid == update.cumulative
    assert await op.balance(c.world.providers[0].address) == before + update.cumulative


async def test_the_module_is_sent_once_and_named_by_hash_after(computed: Computed) -> None:
    c = computed
    lease = await c.open_lease(units=2)
    node = c.node()
    spec, inputs = wc_job(b"a b")
    assert (await node.run(lease, spec, WC, inputs))[0].ok
    assert list(c.compute._modules) == [spec.module_hash]
    await countersign(c, node, lease, [spec.job_id])
    c.compute._modules.clear()  # the node forgot it: the next job is answered module_unknown
    spec2, inputs2 = wc_job(b"c d e")
    result, _ = await node.run(lease, spec2, WC, inputs2)  # resent in full after the answer
    assert result.ok
    assert result.stdout.split()[:3] == [b"0", b"3", b"5"]  # no newline: 0 lines
    assert list(c.compute._modules) == [spec.module_hash]


async def test_no_more_jobs_until_the_consumer_countersigns(computed: Computed) -> None:
    c = computed
    node = c.node()
    first, inputs = wc_job(b"x")
    await node.run(c.lease, first, WC, inputs)
    second, inputs2 = wc_job(b"y")
    with pytest.raises(CountersignRequired):
        await node.run(c.lease, second, WC, inputs2)
    await countersign(c, node, c.lease, [first.job_id])
    result, _ = await node.run(c.lease, second, WC, inputs2)
    assert result.ok


async def test_bad_usage_updates_are_refused_and_change_nothing(computed: Computed) -> None:
    c = computed
    node = c.node()
    spec, inputs = wc_job(b"x y")
    result, _ = await node.run(c.lease, spec, WC, inputs)
    job = spec.job_id
    fuel = result.fuel_used
    good = charge(fuel, PRICE)
    consumer = c.world.consumers[0]
    cases = [
        (UsageUpdate(c.lease, 1, good - 1, fuel, (job,)), consumer, UsageRejected),
        (UsageUpdate(c.lease, 2, good, fuel, (job,)), consumer, UsageRejected),
        (UsageUpdate(c.lease, 1, 0, 0, (), (job,)), consumer, UsageRejected),  # not replicated
        (UsageUpdate(c.lease, 1, good, fuel, (os.urandom(32),)), consumer, UsageRejected),
        (UsageUpdate(c.lease, 1, good, fuel, (job,)), c.world.consumers[1], Unauthenticated),
    ]
    for update, signer, error in cases:
        sig = signer.sign_usage(
            ResourceClass.COMPUTE, Usage(c.lease, update.revision, update.cumulative or 1)
        )
        with pytest.raises(error):
            await node.countersign(update, sig)
        account = await node.account(c.lease)
        assert account.state.revision == 0
        assert list(account.pending) == [job]


async def test_refusals_before_anything_runs(computed: Computed) -> None:
    c = computed
    node = c.node()
    small = await c.open_lease(units=1, escrow=1000)  # 1000 wei cannot cover 10^9 fuel
    spec, inputs = wc_job(b"z")
    with pytest.raises(EscrowExhausted):
        await node.run(small, spec, WC, inputs)
    assert not (await node.account(small)).pending
    stranger = c.node(1)
    with pytest.raises(Forbidden, match="not the consumer"):
        await stranger.run(c.lease, spec, WC, inputs)
    junk = b"(module (func))"
    with pytest.raises(JobRejected, match="not a binary WebAssembly module"):
        await node.run(c.lease, make_job_spec(junk, {}, [], limits=LIMITS), junk)
    storage = await c.world.consumers[0].open_lease(
        c.world.providers[0].address, ResourceClass.STORAGE, 1, 10, PRICES[0], ONE_NUX
    )
    await c.world.operators[0].accept(storage)
    with pytest.raises(Forbidden, match="not a compute lease"):
        await node.run(storage, spec, WC, inputs)
    account = await node.account(c.lease)
    assert not account.pending
    assert account.running == 0
    assert (await node.run(c.lease, spec, WC, inputs))[0].ok  # and the node serves the next
