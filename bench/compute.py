"""The compute figures of a multi-process network in one run, as ``name=value`` lines.

    .venv/bin/python -m bench.compute [--jobs 200] [--map 1000] [--samples 100000000]

The network: a devnet (anvil, contracts deployed) in a temp state directory and 4 provider
nodes as separate ``nuclux node run`` processes on loopback, each offering 2 compute slots
(``nuclux.node.localnet.start_nodes``). This process is the consumer: a ``ComputeClient`` of
devnet account 1 with the SDK's default settings (leases of 2 slots). Before the timed
runs, an untimed warm-up opens the account's compute leases on every node and sends the
module to each (``first_job_opening_leases_s``), so the figures are jobs on leases that exist.

* ``job_r1_ms_p50`` / ``_p95``: submit-to-verified-result latency of a trivial job (a WASI
  module writing ``ok``), ``--jobs`` times one after another, ``replicas=1``: the signed
  request over pinned TLS, the node's checks and pool, the receipt checked against the
  provider's operator key and the result hash, and the countersigned usage (the SDK returns
  only after the provider countersigned the payment).
* ``job_r3_ms_p50`` / ``_p95``: the same with ``replicas=3`` (deterministic profile, three
  providers at once, majority by result hash, three countersignatures).
* ``map_1000_jobs_per_s``: ``ComputeClient.map`` over ``--map`` tiny inputs (one job each,
  the ``wc`` example) across the 4 providers, jobs per second, all results checked.
* ``local_wasmtime_ms_p50``: the trivial module run directly in wasmtime in this process
  (store, WASI, instantiate, ``_start``), in the same run; ``job_r1_overhead_ratio`` is
  ``job_r1_ms_p50`` over it.
* ``fuel_slowdown``: the CPU-bound ``pi.wasm`` example (``--samples`` points) with fuel
  metering on versus off, best of five each, interleaved.
* ``*_consumer_cpu_ms_per_job`` / ``*_nodes_cpu_ms_per_job``: CPU time of this process and of
  the node processes (workers included) per job in that step (``/proc/<pid>/stat``).

Everything started here is stopped by PID in ``finally`` blocks, bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from bench._devnet import network
from bench.storage import CpuMeter, emit
from bench.wasm import TRIVIAL, fuel_slowdown, local_trivial, percentile
from nuclux.chain import ChainConnection, Deployment, Ledger
from nuclux.chain.devnet import dev_account
from nuclux.core.job import JobLimits
from nuclux.keys.derive import from_private_key
from nuclux.node.localnet import LocalNode
from nuclux.sdk import ComputeClient, ComputeSettings

EXAMPLES = Path(__file__).parents[1] / "examples" / "jobs"
NODES = 4
SLOTS = 2
EPOCH = 10
LIMITS = JobLimits(
    fuel=10**8,
    memory_bytes=16 << 20,
    timeout_ms=10_000,
    stdout_bytes=64 << 10,
    stderr_bytes=64 << 10,
    output_bytes=1 << 20,
    scratch_bytes=1 << 20,
)
GOALS = {"job_r1_ms_p50": (50.0, "<=")}
STEP_TIMEOUT = 900.0


class JobCpu(CpuMeter):
    """``bench.storage.CpuMeter`` over the node processes and their compute workers (their
    children, read at each reading: workers are replaced), per job."""

    def node_pids(self) -> list[int]:
        pids = list(self.pids)
        for pid in self.pids:
            with contextlib.suppress(OSError):
                pids += [
                    int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                ]
        return pids

    def per_job(self, what: str, jobs: int) -> None:
        me, nodes = self.read()
        emit(f"{what}_consumer_cpu_ms_per_job", (me - self.last[0]) * 1000 / jobs)
        emit(f"{what}_nodes_cpu_ms_per_job", (nodes - self.last[1]) * 1000 / jobs)


@asynccontextmanager
async def consumer(rpc_url: str, deployment: Path, account: int) -> AsyncIterator[ComputeClient]:
    keys = from_private_key(bytes(dev_account(account).key))
    acct: LocalAccount = Account.from_key(keys.eth_private_key)
    async with await ChainConnection.open(rpc_url, tx_timeout=120) as conn:
        # posted prices: job figures without an auction (60 s windows here) in front of them
        settings = ComputeSettings(use_market=False)
        client = ComputeClient(Ledger(conn, Deployment.load(deployment), acct), keys, settings)
        try:
            yield client
        finally:
            await client.close()


async def latencies(client: ComputeClient, jobs: int, replicas: int) -> list[float]:
    out: list[float] = []
    for _ in range(jobs):
        t = time.perf_counter()
        outcome = await asyncio.wait_for(
            client.run(TRIVIAL, replicas=replicas, limits=LIMITS, name="trivial"), 60
        )
        out.append((time.perf_counter() - t) * 1000)
        if outcome.result.stdout != b"ok\n" or len(outcome.providers) != replicas:
            raise RuntimeError(f"unexpected outcome {outcome}")
    return out


async def measure(
    args: argparse.Namespace, rpc_url: str, dep: Path, nodes: list[LocalNode]
) -> dict[str, float]:
    figures: dict[str, float] = {}
    wc = (EXAMPLES / "wc.wasm").read_bytes()
    async with consumer(rpc_url, dep, 1) as client:
        t = time.perf_counter()
        # untimed: leases on every node, the modules sent to each
        warm = [(f"w{i}.txt", b"warm up\n") for i in range(2 * NODES * SLOTS)]
        for item in await asyncio.wait_for(client.map(wc, warm, [], limits=LIMITS), STEP_TIMEOUT):
            if item.error is not None:
                raise item.error
        for _ in range(NODES):
            await client.run(TRIVIAL, replicas=3, limits=LIMITS, name="trivial")
        emit("first_job_opening_leases_s", time.perf_counter() - t)

        for replicas, name in ((1, "job_r1"), (3, "job_r3")):
            cpu = JobCpu([n.pid for n in nodes])
            ms = await latencies(client, args.jobs, replicas)
            figures[f"{name}_ms_p50"] = statistics.median(ms)
            figures[f"{name}_ms_p95"] = percentile(ms, 0.95)
            emit(f"{name}_ms_p50", figures[f"{name}_ms_p50"])
            emit(f"{name}_ms_p95", figures[f"{name}_ms_p95"])
            cpu.per_job(name, args.jobs)

        inputs = [(f"in{i:05d}.txt", f"job {i} has five words\n".encode()) for i in range(args.map)]
        cpu = JobCpu([n.pid for n in nodes])
        t = time.perf_counter()
        items = await asyncio.wait_for(client.map(wc, inputs, [], limits=LIMITS), STEP_TIMEOUT)
        elapsed = time.perf_counter() - t
        bad = [i for i in items if not i.ok]
        if bad:
            raise RuntimeError(f"{len(bad)} map jobs failed, first: {bad[0]}")
        for item, (_, data) in zip(items, inputs, strict=True):
            assert item.outcome is not None
            words = item.outcome.result.stdout.split()
            if words[:3] != [b"1", b"5", str(len(data)).encode()]:
                raise RuntimeError(f"wrong result for {item.name}: {item.outcome.result.stdout!r}")
        figures["map_1000_jobs_per_s"] = args.map / elapsed
        emit("map_1000_jobs_per_s", figures["map_1000_jobs_per_s"])
        cpu.per_job("map", args.map)
        emit("consumer_transactions", client.transactions)
    return figures


async def run(args: argparse.Namespace, work: Path) -> dict[str, float]:
    state = work / "devnet"
    nodes_options = {"storage_bytes": 1 << 30, "compute_units": SLOTS}
    async with network(state, NODES, epoch=EPOCH, **nodes_options) as (rpc_url, nodes):
        return await measure(args, rpc_url, state / "deployment.json", nodes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="timed trivial jobs per figure")
    parser.add_argument("--map", type=int, default=1000, help="jobs in the map")
    parser.add_argument("--samples", type=int, default=100_000_000, help="pi.wasm points")
    parser.add_argument("--dir", default=None, help="parent of the run's temp directory")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    emit("load_avg_1min", os.getloadavg()[0])
    with tempfile.TemporaryDirectory(prefix="nuclux-bench-compute-", dir=args.dir) as tmp:
        figures = asyncio.run(run(args, Path(tmp)))
    local = statistics.median(local_trivial(args.jobs)) * 1000
    figures["local_wasmtime_ms_p50"] = local
    emit("local_wasmtime_ms_p50", local)
    emit("job_r1_overhead_ratio", figures["job_r1_ms_p50"] / local)
    slowdown, _ = fuel_slowdown((EXAMPLES / "pi.wasm").read_bytes(), [str(args.samples), "7"])
    emit("fuel_slowdown", slowdown)
    emit("load_avg_1min_after", os.getloadavg()[0])
    for name, (goal, how) in GOALS.items():
        value = figures[name]
        met = value <= goal if how == "<=" else value >= goal
        emit(f"{name}_goal", f"{how}{goal:g}")
        emit(f"{name}_met", "true" if met else "false")


if __name__ == "__main__":
    main()
