"""The compute sandbox's costs, as ``name=value`` lines.

    .venv/bin/python bench/wasm.py [--jobs 300] [--samples 100000000]

``local_wasmtime_ms_p50``: a trivial WASI module (it writes ``ok`` to stdout) run directly
in wasmtime in this process, compiled once: a fresh store, WASI context and instance per
run, as the sandbox does, but no worker, pipes, limits or scratch directory.
``pool_trivial_job_ms_p50`` / ``_p95``: the same module as a job through a one-slot
``ComputePool`` (spec checks, the pipe round trips to a warm worker with the module cached,
the scratch directory, the monitor thread, the result); ``pool_overhead_ratio`` is the
ratio of the medians. ``fuel_slowdown``: the CPU-bound example ``pi.wasm`` (``--samples``
points) run in-process with the sandbox's engine settings, with fuel metering on versus
off (runs interleaved, best of five each); ``fuel_slowdown_tight_loop`` the same for an
empty counting loop of 200 M iterations, the worst case. ``worker_spawn_ms``: starting one worker
process until it is ready. ``compile_pi_ms``: compiling ``pi.wasm`` (31 KB) cold, as a
worker does once per module.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import wasmtime

from nuclux.core.job import make_job_spec
from nuclux.node.compute.config import PoolLimits
from nuclux.node.compute.pool import ComputePool
from nuclux.node.compute.process import WorkerProcess
from nuclux.node.compute.sandbox import engine_config

EXAMPLES = Path(__file__).parents[1] / "examples" / "jobs"
TRIVIAL = bytes(
    wasmtime.wat2wasm(
        """(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "ok\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 3))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"""
    )
)


COUNTDOWN = bytes(
    wasmtime.wat2wasm(
        """(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "args_sizes_get" (func $argc (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "done\\n")
  (func (export "_start") (local $n i32)
    (drop (call $argc (i32.const 32) (i32.const 36)))
    (local.set $n (i32.mul (i32.load (i32.const 32)) (i32.const 200000000)))
    (loop (br_if 0 (local.tee $n (i32.sub (local.get $n) (i32.const 1)))))
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 5))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"""
    )
)  # counts down 200 M per argument: the tightest loop, where fuel costs the most


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def engine(fuel: bool) -> wasmtime.Engine:
    config = engine_config()
    config.consume_fuel = fuel
    return wasmtime.Engine(config)


def run_local(eng: wasmtime.Engine, module: wasmtime.Module, args: list[str], fuel: bool) -> float:
    """Seconds for one run: store, WASI, instantiate, ``_start``."""
    t = time.perf_counter()
    store = wasmtime.Store(eng)
    if fuel:
        store.set_fuel(2**62)
    store.set_epoch_deadline(2**40)
    wasi = wasmtime.WasiConfig()
    wasi.argv = ["main", *args]
    out: list[bytes] = []
    wasi.stdout_custom = out.append
    store.set_wasi(wasi)
    linker = wasmtime.Linker(eng)
    linker.define_wasi()
    start = linker.instantiate(store, module).exports(store)["_start"]
    assert isinstance(start, wasmtime.Func)
    start(store)
    elapsed = time.perf_counter() - t
    if not b"".join(out):
        raise RuntimeError("the module wrote nothing")
    return elapsed


def local_trivial(runs: int) -> list[float]:
    eng = engine(fuel=True)
    module = wasmtime.Module(eng, TRIVIAL)
    for _ in range(20):
        run_local(eng, module, [], True)
    return [run_local(eng, module, [], True) for _ in range(runs)]


def fuel_slowdown(wasm: bytes, args: list[str], reps: int = 5) -> tuple[float, float]:
    """Best run time with fuel over best without (runs interleaved; on a shared machine the
    best of five is the least noisy estimate of CPU-bound time), and the cold compile ms."""
    engines = {fuel: engine(fuel) for fuel in (True, False)}
    t = time.perf_counter()
    modules = {True: wasmtime.Module(engines[True], wasm)}
    compile_ms = (time.perf_counter() - t) * 1000
    modules[False] = wasmtime.Module(engines[False], wasm)
    times: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(reps):
        for fuel in (True, False):
            times[fuel].append(run_local(engines[fuel], modules[fuel], args, fuel))
    return min(times[True]) / min(times[False]), compile_ms


async def pool_trivial(jobs: int) -> tuple[list[float], float]:
    with tempfile.TemporaryDirectory(prefix="nuclux-bench-") as root:
        t = time.perf_counter()
        worker = await WorkerProcess.spawn(PoolLimits(), Path(root) / "spawn")
        spawn = time.perf_counter() - t
        await worker.kill()
        spec = make_job_spec(TRIVIAL)
        async with ComputePool(1, scratch_root=Path(root) / "pool") as pool:
            for _ in range(20):
                (await pool.run(spec, TRIVIAL)).check()
            times = []
            for _ in range(jobs):
                t = time.perf_counter()
                result = await pool.run(spec, TRIVIAL)
                times.append(time.perf_counter() - t)
                if result.stdout != b"ok\n":
                    raise RuntimeError(f"unexpected result {result}")
    return times, spawn


def main(args: argparse.Namespace) -> dict[str, str]:
    local = local_trivial(args.jobs)
    pooled, spawn = asyncio.run(pool_trivial(args.jobs))
    pi = (EXAMPLES / "pi.wasm").read_bytes()
    slowdown, compile_ms = fuel_slowdown(pi, [str(args.samples), "7"])
    tight, _ = fuel_slowdown(COUNTDOWN, ["x"])
    local_p50, pool_p50 = statistics.median(local) * 1000, statistics.median(pooled) * 1000
    return {
        "local_wasmtime_ms_p50": f"{local_p50:.3f}",
        "pool_trivial_job_ms_p50": f"{pool_p50:.3f}",
        "pool_trivial_job_ms_p95": f"{percentile(pooled, 0.95) * 1000:.3f}",
        "pool_overhead_ratio": f"{pool_p50 / local_p50:.1f}",
        "fuel_slowdown": f"{slowdown:.2f}",
        "fuel_slowdown_tight_loop": f"{tight:.2f}",
        "worker_spawn_ms": f"{spawn * 1000:.0f}",
        "compile_pi_ms": f"{compile_ms:.0f}",
        "trivial_module_sha256": hashlib.sha256(TRIVIAL).hexdigest()[:16],
    }


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=300, help="timed runs of the trivial module")
    p.add_argument("--samples", type=int, default=100_000_000, help="pi.wasm's points")
    results = main(p.parse_args())
    for name, value in results.items():
        print(f"{name}={value}")
    sys.stdout.flush()
    # wasmtime's WASI I/O threads can panic in interpreter teardown; nothing is left to do
    os._exit(0)
