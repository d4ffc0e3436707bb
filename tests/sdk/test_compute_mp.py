"""Compute on a multi-process network: anvil and four `nuclux node run` processes, one of
which forges every result (the test-only `corrupt_results` node option).

Through the SDK against anvil: replicated jobs return the honest result and the forging node
is outvoted and unpaid; a node killed (SIGKILL) while it runs a job is replaced and the job
completes elsewhere; and at the end every lease settles on chain with the provider paid
exactly the fuel its paid jobs used times the lease's price, the rest of the escrow back
with the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio
from eth_account.signers.local import LocalAccount

from nuclux.chain import ChainConnection, Deployment, DeployParams, Ledger
from nuclux.chain.devnet import dev_account, devnet_down, devnet_up
from nuclux.core.compute_account import charge
from nuclux.core.job import JobLimits
from nuclux.core.lease import LeaseState
from nuclux.core.types import ONE_NUX, ResourceClass
from nuclux.keys.derive import from_private_key
from nuclux.net.client import NodeClient
from nuclux.node.localnet import LocalNode, start_nodes, stop_nodes
from nuclux.sdk import ComputeClient, ComputeSettings

pytestmark = pytest.mark.anvil

EXAMPLES = Path(__file__).parents[2] / "examples" / "jobs"
SHA256 = (EXAMPLES / "sha256.wasm").read_bytes()
PI = (EXAMPLES / "pi.wasm").read_bytes()
PARAMS = DeployParams(epoch_length=60, dispute_window=120, demand_window=60)
LIAR = 3
LIMITS = JobLimits(
    fuel=5 * 10**10,
    memory_bytes=16 << 20,
    timeout_ms=60_000,
    stdout_bytes=64 << 10,
    stderr_bytes=64 << 10,
    output_bytes=1 << 20,
    scratch_bytes=1 << 20,
)
SETTINGS = ComputeSettings(
    units=1,
    request_grace=5.0,
    accept_timeout=30.0,
    poll_interval=0.1,
    escrow_jobs=8,
    use_market=False,  # these nodes run no bid agent
)


@dataclass
class Net:
    rpc: str
    deployment: Deployment
    nodes: list[LocalNode]


@pytest_asyncio.fixture(scope="module")
async def net(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Net]:
    state = tmp_path_factory.mktemp("compute-mp") / "devnet"
    info = await devnet_up(state, params=PARAMS, funded=2, nux_each=100_000 * ONE_NUX)
    try:
        nodes = await start_nodes(
            state, 4, storage_bytes=1 << 30, compute_units=1, corrupt_results=[LIAR], poll=0.2
        )
        yield Net(info.rpc_url, Deployment.load(state / "deployment.json"), nodes)
    finally:
        try:
            await asyncio.wait_for(stop_nodes(state), 60)  # every recorded node, by PID
        finally:
            await asyncio.wait_for(devnet_down(state), 60)


async def compute_client(conn: ChainConnection, net: Net) -> ComputeClient:
    account: LocalAccount = dev_account(1)
    keys = from_private_key(bytes(account.key))
    return ComputeClient(Ledger(conn, net.deployment, account), keys, SETTINGS)


async def busy_node(net: Net, key: bytes, timeout: float = 30.0) -> LocalNode:
    """The node whose compute slot is in use (asked over its API). The live nodes are asked
    together on connections opened once, every 20 ms: a job of about a second must not slip
    between two rounds of TLS handshakes on a loaded machine."""
    live = [n for n in net.nodes if _alive(n.pid)]
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                NodeClient(n.endpoint, bytes.fromhex(n.fingerprint), key)
            )
            for n in live
        ]

        async def busy(c: NodeClient) -> bool:
            try:
                return bool((await c.info())["compute"]["busy"] > 0)
            except OSError:
                return False

        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            for node, yes in zip(live, await asyncio.gather(*map(busy, clients)), strict=True):
                if yes:
                    return node
            await asyncio.sleep(0.02)
    raise AssertionError("no node started the job")


async def test_liar_outvoted_killed_node_replaced_and_everyone_paid_to_the_wei(net: Net) -> None:
    liar = net.nodes[LIAR].owner.lower()
    data = os.urandom(5000)
    honest_line = hashlib.sha256(data).hexdigest().encode()
    async with await ChainConnection.open(net.rpc, tx_timeout=60) as conn:
        client = await compute_client(conn, net)
        ledger = client.ledger
        before = await ledger.balance()
        try:
            # leases on all four nodes first (a map spreads over as many providers as it
            # has jobs), then replicated jobs until the forging node is among the replicas
            warm = await client.map(SHA256, [(f"w{i}", data) for i in range(4)], limits=LIMITS)
            assert all(item.ok for item in warm)
            assert len(await client.leases.held()) == 4
            outvoted = False
            for _ in range(8):
                out = await client.run(
                    SHA256, ["/in/data"], {"data": data}, replicas=3, limits=LIMITS
                )
                assert out.ok
                assert out.result.stdout.startswith(honest_line)
                assert liar not in [p.lower() for p in out.providers]
                if liar in [p.lower() for p in out.declined]:
                    outvoted = True
                    break
            assert outvoted, "the forging node was never among the replicas"

            # a node killed mid-job: the job runs again elsewhere
            job = asyncio.create_task(client.run(PI, ["30000000", "7"], replicas=1, limits=LIMITS))
            victim = await busy_node(net, bytes(dev_account(1).key))
            os.kill(victim.pid, signal.SIGKILL)
            out = await asyncio.wait_for(job, 120)
            assert out.ok
            assert out.result.stdout.startswith(b"pi=3.14")
            assert victim.owner.lower() not in [p.lower() for p in out.providers]
            assert victim.owner.lower() in client.leases.retired

            # what each lease owes by the consumer's books: fuel paid and its total
            books = {
                lease.id: client.accounts.state(lease.id)
                for lease in await ledger.leases_of(ledger.address)
                if lease.cls is ResourceClass.COMPUTE
            }
            # end every lease (co-signed totals go on chain), let the window pass, settle
            await client.end_leases()
            await conn.advance_time(PARAMS.dispute_window + 1)
            await client.recover()
            entries = client.jobs()
        finally:
            await client.close()
        leases = [
            lease
            for lease in await ledger.leases_of(ledger.address)
            if lease.cls is ResourceClass.COMPUTE
        ]
        assert len(leases) >= 3
        spent = 0
        for lease in leases:
            assert lease.state is LeaseState.CLOSED
            _, total = await ledger.latest_usage(ResourceClass.COMPUTE, lease.id)
            book = books[lease.id]
            fuel = 0 if book is None else book.fuel_paid
            assert lease.paid == total == charge(fuel, lease.price)  # fuel x price, to the wei
            if lease.provider.lower() == liar:  # paid for no replicated job: outvoted each time
                assert total == sum(
                    e.cost_wei
                    for e in entries
                    if e.replicas == 1 and liar in [p.lower() for p in e.providers]
                )
            spent += lease.paid
        assert sum(e.cost_wei for e in entries if e.state == "succeeded") == spent
        assert await ledger.balance() == before - spent  # the rest of every escrow came back


async def test_a_hung_node_is_given_up_within_the_bound_and_the_job_runs_elsewhere(
    net: Net,
) -> None:
    limits = JobLimits(
        fuel=5 * 10**10,
        memory_bytes=16 << 20,
        timeout_ms=4_000,
        stdout_bytes=64 << 10,
        output_bytes=1 << 20,
        scratch_bytes=1 << 20,
    )
    async with await ChainConnection.open(net.rpc, tx_timeout=60) as conn:
        client = await compute_client(conn, net)
        live = [n for n in net.nodes if _alive(n.pid)]
        stopped: LocalNode | None = None
        try:
            start = asyncio.get_running_loop().time()
            job = asyncio.create_task(client.run(PI, ["20000000", "3"], limits=limits))
            stopped = await busy_node(net, bytes(dev_account(1).key))
            assert stopped in live
            os.kill(stopped.pid, signal.SIGSTOP)  # accepts connections, answers nothing
            out = await asyncio.wait_for(job, 120)
            took = asyncio.get_running_loop().time() - start
        finally:
            if stopped is not None:
                os.kill(stopped.pid, signal.SIGCONT)
            await client.close()
    assert out.ok
    assert stopped.owner.lower() not in [p.lower() for p in out.providers]
    assert stopped.owner.lower() in client.leases.retired
    # given up after the job's own limit plus the grace, then run again from the start
    assert took < 2 * (limits.timeout_ms / 1000 + SETTINGS.request_grace) + 30


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
