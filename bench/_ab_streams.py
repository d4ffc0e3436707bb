"""Block streams against one HTTP request per block, interleaved on one network.

    .venv/bin/python -m bench._ab_streams [--mib 128] [--rounds 4]

One devnet and 8 node processes (as ``bench.storage``); two clients of one account, one with
``block_streams`` and one without, take turns: each round puts a fresh ``--mib`` file with
each (upload), then gets each file back (its first download), in alternating order. Prints,
per mode, the mean of each figure over the rounds (MB/s, and the consumer's and the nodes' CPU
per MiB), so machine noise falls on both alike.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

from bench._devnet import network
from bench.storage import DAYS, NODES, CpuMeter, K, N, bench_settings, consumer, random_file
from nuclux.allocator import tune_allocator
from nuclux.chain.devnet import dev_account

MiB = 1 << 20


async def main(mib: int, rounds: int, only: str | None = None) -> None:
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        state, files = Path(tmp) / "state", Path(tmp) / "files"
        files.mkdir()
        async with network(state, NODES, epoch=10) as (rpc, nodes):
            dep = state / "deployment.json"
            key = "0x" + bytes(dev_account(1).key).hex()
            base = bench_settings()
            on = dataclasses.replace(base, block_streams=True)
            off = dataclasses.replace(base, block_streams=False)
            figures: dict[str, list[float]] = {}
            async with consumer(rpc, dep, key, on) as a, consumer(rpc, dep, key, off) as b:
                warm = files / "warm"
                random_file(warm, MiB)
                await a.put(warm, k=K, n=N, days=DAYS)
                await a.flush()
                await asyncio.sleep(3)
                pids = [n.pid for n in nodes]
                print("node_pids=" + ",".join(map(str, pids)), flush=True)
                for r in range(rounds):
                    order = [("streams", a), ("http", b)]
                    if r % 2:
                        order.reverse()
                    order = [(x, c) for x, c in order if only in (None, x)]
                    refs = {}
                    for name, client in order:
                        path = files / f"{name}{r}"
                        random_file(path, mib * MiB)
                        cpu = CpuMeter(pids)
                        t = time.perf_counter()
                        refs[name] = await client.put(path, k=K, n=N, days=DAYS)
                        await client.flush()
                        dt = time.perf_counter() - t
                        c, n = (x - y for x, y in zip(cpu.read(), cpu.last, strict=True))
                        _add(figures, f"{name}_upload", mib * MiB / dt / 1e6, c, n, mib)
                    for name, client in order:
                        out = files / f"{name}{r}.out"
                        cpu = CpuMeter(pids)
                        t = time.perf_counter()
                        await client.get(refs[name], out)
                        dt = time.perf_counter() - t
                        c, n = (x - y for x, y in zip(cpu.read(), cpu.last, strict=True))
                        _add(figures, f"{name}_download", mib * MiB / dt / 1e6, c, n, mib)
                        out.unlink()
            for k, v in sorted(figures.items()):
                print(f"{k}={statistics.mean(v):.2f}  ({', '.join(f'{x:.1f}' for x in v)})")


def _add(f: dict[str, list[float]], name: str, mbps: float, c: float, n: float, mib: int) -> None:
    f.setdefault(f"{name}_MBps", []).append(mbps)
    f.setdefault(f"{name}_client_cpu_ms_per_MiB", []).append(c * 1000 / mib)
    f.setdefault(f"{name}_nodes_cpu_ms_per_MiB", []).append(n * 1000 / mib)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--mib", type=int, default=128)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--only", choices=["streams", "http"], default=None)
    args = p.parse_args()
    tune_allocator()
    asyncio.run(main(args.mib, args.rounds, args.only))
