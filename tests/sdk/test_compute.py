"""The compute SDK on an in-process network of four compute nodes (real TLS, real wasmtime
workers, the embedded chain): jobs paid to the wei, replicas outvoting a liar, a provider
crashing mid-job, map over many inputs, the journal, and bad input refused before any
transaction."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import pytest_asyncio
from eth_account.signers.local import LocalAccount

from nuclux.core.compute_account import charge
from nuclux.core.job import JobStatus, verify_receipt
from nuclux.core.lease import LeaseState
from nuclux.core.types import ResourceClass
from nuclux.errors import UsageError
from nuclux.sdk import ComputeClient, ComputeSettings
from nuclux.sdk.compute import NoComputeProviders, NoMajority
from tests.chain.world import PRICES
from tests.compute.modules import TRIVIAL
from tests.sdk.compute_network import (
    LIMITS,
    SETTINGS,
    ComputeNetwork,
    start_compute_network,
    stop_compute_network,
)

EXAMPLES = Path(__file__).parents[2] / "examples" / "jobs"
SHA256 = EXAMPLES / "sha256.wasm"
PI = EXAMPLES / "pi.wasm"
HOSTILE = EXAMPLES / "testing" / "hostile.wasm"
COMPUTE = ResourceClass.COMPUTE
PRICE = PRICES[1]


@asynccontextmanager
async def session(
    cnet: ComputeNetwork, label: str, settings: ComputeSettings = SETTINGS
) -> AsyncIterator[tuple[LocalAccount, ComputeClient]]:
    """A fresh consumer's client; its leases are ended afterwards (their slots freed)."""
    acct = await cnet.new_account(label)
    async with cnet.client(acct, settings) as client:
        try:
            yield acct, client
        finally:
            await client.end_leases()


@pytest_asyncio.fixture(scope="module")
async def cnet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ComputeNetwork]:
    net = await start_compute_network(tmp_path_factory.mktemp("sdk-compute"))
    try:
        yield net
    finally:
        await stop_compute_network(net)


async def test_single_job_returns_results_and_pays_fuel_times_price(
    cnet: ComputeNetwork, tmp_path: Path
) -> None:
    data = b"hello nuclux\n" * 100
    async with session(cnet, "r1") as (_acct, client):
        out = await client.run(SHA256, [], {"data.txt": data}, limits=LIMITS)
        assert out.ok, out.result.message
        digest = hashlib.sha256(data).hexdigest()
        assert digest.encode() in out.result.stdout
        assert digest.encode() in out.result.outputs["sha256.txt"]
        assert len(out.providers) == 1
        assert out.declined == ()
        (receipt,) = out.receipts
        lid = out.leases[0]
        lease = await client.ledger.lease(lid)
        verify_receipt(receipt, (await client.ledger.provider(lease.provider)).operator)
        assert receipt.fuel_used == out.fuel_used > 0
        assert out.cost == charge(out.fuel_used, lease.price) > 0

        # a second job on the same lease: no new transaction, totals add up exactly
        sent = client.transactions
        again = await client.run(SHA256, [], {"data.txt": data}, limits=LIMITS)
        assert again.leases == out.leases
        assert client.transactions == sent
        state = client.accounts.state(lid)
        assert state is not None
        assert state.revision == 2
        assert state.fuel_paid == out.fuel_used + again.fuel_used
        assert state.cumulative == charge(state.fuel_paid, lease.price)

        # ending the lease submits the co-signed total: what the chain pays is fuel x price
        assert lid in await client.end_leases()
        revision, total = await client.ledger.latest_usage(COMPUTE, lid)
        assert (revision, total) == (2, charge(state.fuel_paid, lease.price))
        assert (await client.ledger.lease(lid)).state.label == "closing"

        listed = {j.id: j for j in client.jobs()}
        assert listed[out.job_id.hex()].state == "succeeded"
        assert listed[out.job_id.hex()].cost_wei == out.cost
        assert listed[out.job_id.hex()].fuel_used == out.fuel_used
        assert listed[out.job_id.hex()].providers == [lease.provider]


async def test_replicas_outvote_a_lying_provider(cnet: ComputeNetwork, tmp_path: Path) -> None:
    liar_index = 3
    liar = cnet.nodes[liar_index]
    assert liar is not None
    assert liar.compute is not None
    liar_owner = cnet.configs[liar_index].owner.lower()
    settings = dataclasses.replace(SETTINGS, journal_dir=tmp_path)
    async with session(cnet, "r3", settings) as (acct, client):
        # hold leases on the liar and two honest providers, so the three replicas meet it
        honest_out = {cnet.configs[0].owner.lower()}
        got = await client.leases.ensure(
            3, exclude=honest_out, fuel_limit=LIMITS.fuel, max_price=None
        )
        assert liar_owner in {x.provider for x in got}
        liar.compute.corrupt_results = True
        try:
            out = await client.run(PI, ["20000", "7"], replicas=3, limits=LIMITS)
        finally:
            liar.compute.corrupt_results = False
        assert out.ok
        assert out.result.stdout.startswith(b"pi=3.1")
        assert b"forged" not in out.result.stdout
        assert len(out.providers) == 2
        assert [p.lower() for p in out.declined] == [liar_owner]
        assert all(r.result_hash == out.result.result_hash for r in out.receipts)
        # the liar's job was declined: the revision it countersigned pays nothing, and it
        # lost this consumer's trust: retired, its lease cancelled with that total on chain
        liar_lease = next(x for x in got if x.provider == liar_owner)
        assert liar_owner in client.leases.retired
        lease = await client.ledger.lease(liar_lease.id)
        assert lease.state is LeaseState.CLOSING
        assert await client.ledger.latest_usage(ResourceClass.COMPUTE, liar_lease.id) == (1, 0)
        # the honest two were paid exactly their fuel
        lease = await client.ledger.lease(out.leases[0])
        assert out.cost == sum(charge(r.fuel_used, lease.price) for r in out.receipts)
        entry = {j.id: j for j in client.jobs()}[out.job_id.hex()]
        assert entry.replicas == 3
        assert entry.declined == list(out.declined)
        # and the next client of the account does not lease from it again (the journal)
        async with cnet.client(acct, settings) as later:
            assert liar_owner in later.leases.retired
            try:
                again = await later.run(PI, ["2000", "7"], replicas=3, limits=LIMITS)
            finally:
                await later.end_leases()
            assert liar_owner not in [p.lower() for p in again.providers]


async def test_a_tie_asks_one_more_provider_then_gives_up_without_a_majority(
    cnet: ComputeNetwork,
) -> None:
    liar = cnet.nodes[3]
    assert liar is not None
    assert liar.compute is not None
    liar_owner = cnet.configs[3].owner.lower()
    pair = {cnet.configs[0].owner.lower(), liar_owner}
    rest = {cfg.owner.lower() for cfg in cnet.configs} - pair
    async with session(cnet, "tie") as (_acct, client):
        await client.leases.ensure(2, exclude=rest, fuel_limit=LIMITS.fuel, max_price=None)
        liar.compute.corrupt_results = True
        try:
            # two replicas disagree: a third provider is asked and its answer decides
            out = await client.run(PI, ["3000", "5"], replicas=2, limits=LIMITS)
            assert out.result.stdout.startswith(b"pi=3.")
            assert len(out.providers) == 2
            assert [p.lower() for p in out.declined] == [liar_owner]
            # no more providers allowed: no majority, both are paid, the error lists hashes
            strict = dataclasses.replace(SETTINGS, max_extra_replicas=0)
            async with session(cnet, "tie-strict", strict) as (_, tight):
                await tight.leases.ensure(2, exclude=rest, fuel_limit=LIMITS.fuel, max_price=None)
                with pytest.raises(NoMajority, match="no strict majority") as caught:
                    await tight.run(PI, ["3000", "5"], replicas=2, limits=LIMITS)
                assert len(caught.value.hashes) == 2
                assert tight.jobs()[-1].state == "no-majority"
                held = await tight.leases.held()
                assert {cl.provider for cl in held} == pair
                for cl in held:
                    account = await cl.node.account(cl.id)
                    assert account.pending == {}
                    assert (account.jobs_paid, account.jobs_declined) == (1, 0)
        finally:
            liar.compute.corrupt_results = False


async def test_a_provider_crashing_mid_job_is_replaced(cnet: ComputeNetwork) -> None:
    async with session(cnet, "crash") as (acct, client):
        limits = dataclasses.replace(LIMITS, timeout_ms=30_000)
        # a job that blocks 3 s in a WASI sleep: long enough to crash its provider under it
        job = asyncio.create_task(client.run(HOSTILE, ["sleep", "3"], limits=limits))
        victim = None
        for _ in range(600):
            busy = [
                i
                for i, rt in enumerate(cnet.nodes)
                if rt is not None and rt.compute is not None and rt.compute.pool.busy > 0
            ]
            if busy:
                victim = busy[0]
                break
            await asyncio.sleep(0.02)
        assert victim is not None, "the job never started"
        gone = cnet.configs[victim].owner.lower()
        await cnet.crash(victim)
        try:
            out = await job
            assert out.ok, out.result.message
            assert out.result.stdout == b"woke up\n"
            assert out.cost == out.fuel_used * PRICE // 10**6 > 0, client.leases.retired
            assert gone not in [p.lower() for p in out.providers]
            assert gone in client.leases.retired
            # its lease was cancelled: closing, so the unused escrow comes back on recover()
            mine = await client.ledger.leases_of(acct.address)
            dead = [x for x in mine if x.provider.lower() == gone]
            assert dead
            assert all(x.state.label in ("closing", "closed") for x in dead)
            await cnet.conn.advance_time(cnet.world.deployment.params.dispute_window + 60)
            refunds = dict(await client.recover())
            assert refunds
            assert all(refunds[x.id] == x.escrow for x in dead)
        finally:
            await cnet.start(victim)


async def test_a_provider_leaving_the_registry_is_replaced(cnet: ComputeNetwork) -> None:
    acct = await cnet.new_account("paused")
    settings = dataclasses.replace(SETTINGS, directory_ttl=0.01)  # read the registry afresh
    owner = cnet.world.providers[2]
    async with cnet.client(acct, settings) as client:
        others = {cfg.owner.lower() for i, cfg in enumerate(cnet.configs) if i != 2}
        (held,) = await client.leases.ensure(
            1, exclude=others, fuel_limit=LIMITS.fuel, max_price=None
        )
        assert held.provider == owner.address.lower()
        await owner.set_paused(True)
        try:
            out = await client.run(SHA256, [], {"x.txt": b"x"}, limits=LIMITS)
            assert out.ok
            assert owner.address.lower() not in [p.lower() for p in out.providers]
            assert "registry" in client.leases.retired[owner.address.lower()]
            assert (await client.ledger.lease(held.id)).state.label == "closing"
        finally:
            await owner.set_paused(False)
            await client.end_leases()


async def test_recover_ends_leases_past_their_term_and_settles_them(
    cnet: ComputeNetwork,
) -> None:
    short = dataclasses.replace(SETTINGS, lease_days=0.01)  # 864 s: 15 epochs of 60 s
    async with session(cnet, "term", short) as (_acct, client):
        out = await client.run(SHA256, [], {"a.txt": b"a"}, limits=LIMITS)
        (lid,) = out.leases
        lease = await client.ledger.lease(lid)
        for _ in range(200):  # the provider's agent submits the co-signed total as it goes
            if (await client.ledger.latest_usage(COMPUTE, lid))[1] == out.cost:
                break
            await asyncio.sleep(0.1)
        await cnet.conn.advance_time(int(0.01 * 86_400) + 120)
        assert await client.recover() == []  # its term is over: closing, window open
        assert (await client.ledger.lease(lid)).state.label == "closing"
        await cnet.conn.advance_time(cnet.world.deployment.params.dispute_window + 60)
        refunds = dict(await client.recover())
        settled = await client.ledger.lease(lid)
        assert settled.state.label == "closed"
        assert settled.paid == out.cost
        assert refunds[lid] == lease.escrow - out.cost


async def test_map_runs_one_job_per_input_across_providers(cnet: ComputeNetwork) -> None:
    inputs = [(f"in{i:02d}.txt", f"input number {i}\n".encode()) for i in range(20)]
    seen: list[tuple[int, int]] = []
    async with session(cnet, "map") as (_acct, client):
        items = await client.map(
            SHA256, inputs, limits=LIMITS, progress=lambda d, t: seen.append((d, t))
        )
        assert [i.name for i in items] == [n for n, _ in inputs]
        assert all(i.ok for i in items), [i.error for i in items if not i.ok]
        for item, (_, data) in zip(items, inputs, strict=True):
            assert item.outcome is not None
            assert hashlib.sha256(data).hexdigest().encode() in item.outcome.result.stdout
        providers = {p for i in items if i.outcome for p in i.outcome.providers}
        assert len(providers) >= 2  # spread over the providers
        assert seen[-1] == (20, 20)
        assert len(seen) == 20
        assert len([j for j in client.jobs() if j.state == "succeeded"]) == 20


async def test_failed_job_is_recorded_with_its_status(cnet: ComputeNetwork) -> None:
    async with session(cnet, "fail") as (_acct, client):
        out = await client.run(SHA256, ["/in/missing"], limits=LIMITS)
        assert not out.ok
        assert out.result.status is JobStatus.EXITED
        assert out.result.exit_code != 0
        assert out.cost > 0
        entry = client.jobs()[-1]
        assert entry.state == "failed"
        assert entry.exit_code == out.result.exit_code
        # more replicas than providers: every one that ran is paid, the error says why
        with pytest.raises(NoComputeProviders, match="5 replicas need as many"):
            await client.run(TRIVIAL, replicas=5, limits=LIMITS)
        assert client.jobs()[-1].state == "error"
        for cl in await client.leases.held():
            assert (await cl.node.account(cl.id)).pending == {}


async def test_bad_input_is_refused_before_any_transaction(
    cnet: ComputeNetwork, tmp_path: Path
) -> None:
    text = tmp_path / "job.wat"
    text.write_text('(module (func (export "_start")))')
    async with session(cnet, "bad") as (_acct, client):
        with pytest.raises(UsageError, match="no such module"):
            await client.run(tmp_path / "missing.wasm")
        with pytest.raises(UsageError, match="not a binary WebAssembly module"):
            await client.run(text)
        with pytest.raises(UsageError, match="replicas"):
            await client.run(TRIVIAL, replicas=0)
        with pytest.raises(UsageError, match="input name"):
            await client.run(TRIVIAL, inputs={"../etc": b"x"})
        with pytest.raises(NoComputeProviders):
            await client.run(TRIVIAL, limits=LIMITS, max_price=1)
        assert client.transactions == 0
        assert client.jobs() == [] or all(j.state == "error" for j in client.jobs())
    with pytest.raises(UsageError):
        ComputeSettings(replicas=0)
