"""The pool: slots and refusal beyond them, cancellation kills, recycling after limits,
crashes, the compile-time limits, the module cache, and cleanup."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from collections.abc import Callable

import pytest

from nuclux.core.job import ComputeBusy, ComputeError, JobRejected, JobStatus
from nuclux.errors import UsageError
from nuclux.node.compute import ComputePool, PoolLimits
from nuclux.node.compute.config import WORKER_OVERHEAD_BYTES, worker_memory_for
from tests.compute import modules as m
from tests.compute.conftest import (
    CEILING,
    HOSTILE,
    TEST_LIMITS,
    closed_cleanly,
    gone,
    run,
    started_pool,
)

pytestmark = pytest.mark.timeout(60)


async def eventually(condition: Callable[[], bool], seconds: float = 20) -> None:
    """Poll ``condition`` every 10 ms until it holds; fail after ``seconds``."""
    for _ in range(int(seconds * 100)):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"condition not met within {seconds} s")


async def test_capacity_is_refused_at_once_and_cancel_kills() -> None:
    pool = await started_pool(1)
    try:
        [pid] = pool.worker_pids()
        long = asyncio.create_task(run(pool, m.SPIN, fuel=10**11, timeout_ms=20_000))
        await eventually(lambda: pool.busy == 1)
        with pytest.raises(ComputeBusy, match="all 1 compute slots of this node are busy"):
            await run(pool, m.TRIVIAL)
        await asyncio.sleep(0.2)  # let the job reach its worker
        long.cancel()
        with pytest.raises(asyncio.CancelledError):
            await long
        await eventually(lambda: gone(pid))
        assert pool.busy == 0
        assert (await run(pool, m.TRIVIAL)).ok
        assert pid not in pool.worker_pids()
    finally:
        await closed_cleanly(pool)


async def test_slots_run_side_by_side() -> None:
    pool = await started_pool(2)
    try:
        jobs = [run(pool, HOSTILE, ["sleep", "1"], timeout_ms=5000) for _ in range(2)]
        results = await asyncio.gather(*jobs)
        assert [r.stdout for r in results] == [b"woke up\n"] * 2
        burst = await asyncio.gather(
            *(run(pool, m.TRIVIAL) for _ in range(3)), return_exceptions=True
        )
        assert sum(isinstance(r, ComputeBusy) for r in burst) == 1
        assert pool.busy == 0
    finally:
        await closed_cleanly(pool)


async def test_workers_are_reused_after_success_and_replaced_after_a_limit() -> None:
    pool = await started_pool(1)
    try:
        [pid] = pool.worker_pids()
        for _ in range(3):
            assert (await run(pool, m.TRIVIAL)).ok
        assert (await run(pool, m.RECURSE)).status is JobStatus.TRAPPED  # a trap is no limit
        assert pool.worker_pids() == [pid]
        assert (await run(pool, m.SPIN, fuel=10_000)).status is JobStatus.FUEL_EXHAUSTED
        assert (await run(pool, m.TRIVIAL)).ok
        assert pid not in pool.worker_pids()
        assert gone(pid)
    finally:
        await closed_cleanly(pool)


async def test_a_worker_that_dies_mid_job_is_reported_and_replaced() -> None:
    pool = await started_pool(1)
    try:
        [pid] = pool.worker_pids()
        job = asyncio.create_task(run(pool, m.SPIN, fuel=10**11, timeout_ms=20_000))
        await eventually(lambda: pool.busy == 1)
        await asyncio.sleep(0.3)
        os.kill(pid, signal.SIGKILL)
        r = await job
        assert r.status is JobStatus.CRASHED
        assert "signal SIGKILL" in r.message
        assert r.fuel_used == 0
        assert (await run(pool, m.TRIVIAL)).ok
    finally:
        await closed_cleanly(pool)


async def test_compilation_is_bounded_by_the_worker_cpu_limit() -> None:
    limits = PoolLimits(
        ceiling=CEILING,
        compile_cpu_seconds=1,
    )
    pool = await started_pool(1, limits)
    try:
        with pytest.raises(JobRejected, match=r"CPU-time limit of 1 s \(compile_cpu_seconds\)"):
            await run(pool, m.slow_to_compile(branches=16_000))  # ~1.5 s of CPU (12k: ~1.1 s)
        assert (await run(pool, m.TRIVIAL)).ok
    finally:
        await closed_cleanly(pool)


async def test_compilation_is_bounded_by_the_watchdog() -> None:
    limits = PoolLimits(
        ceiling=CEILING,
        compile_timeout=0.5,
    )
    pool = await started_pool(1, limits)
    try:
        with pytest.raises(JobRejected, match=r"did not compile within 0\.5 s"):
            await run(pool, m.slow_to_compile())
        assert (await run(pool, m.TRIVIAL)).ok
    finally:
        await closed_cleanly(pool)


async def test_compiled_modules_are_cached_per_worker() -> None:
    limits = PoolLimits(ceiling=CEILING, cache_entries=1)
    pool = await started_pool(1, limits)
    try:
        assert (await run(pool, m.TRIVIAL)).ok
        [worker] = pool._idle
        assert worker.modules == {hashlib.sha256(m.TRIVIAL).digest()}
        assert (await run(pool, m.TRIVIAL)).ok  # from the worker's cache: no module sent
        # a cache of one: EXIT_7 evicts TRIVIAL in the worker, which then asks for it again
        assert (await run(pool, m.EXIT_7)).exit_code == 7
        assert (await run(pool, m.TRIVIAL)).ok
        assert pool._idle == [worker]
        assert worker.jobs == 4
    finally:
        await closed_cleanly(pool)


async def test_pool_lifecycle_and_configuration() -> None:
    with pytest.raises(UsageError, match="at least one slot"):
        ComputePool(0)
    with pytest.raises(UsageError, match="worker_memory_bytes must be at least"):
        PoolLimits(worker_memory_bytes=WORKER_OVERHEAD_BYTES)
    default = PoolLimits()
    assert default.worker_memory == worker_memory_for(default.ceiling)
    assert default.worker_memory > default.ceiling.memory_bytes + WORKER_OVERHEAD_BYTES
    pool = ComputePool(1, TEST_LIMITS)
    with pytest.raises(ComputeError, match="start it first"):
        await run(pool, m.TRIVIAL)
    async with pool:
        assert len(pool.worker_pids()) == 1
        with pytest.raises(UsageError, match="already running"):
            await pool.start()
        job = asyncio.create_task(run(pool, m.SPIN, fuel=10**11, timeout_ms=20_000))
        await eventually(lambda: pool.busy == 1)
        await asyncio.sleep(0.2)
    with pytest.raises(ComputeError, match="closed while the job ran"):
        await job
    with pytest.raises(ComputeError, match="closed"):
        await run(pool, m.TRIVIAL)
    await pool.close()  # idempotent
