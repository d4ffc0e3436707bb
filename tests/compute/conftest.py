"""Fixtures of the compute tests: a shared two-slot pool with small ceilings, the example
and test modules, and a check that every worker a pool started is gone after ``close``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest_asyncio
import wasmtime

from nuclux.core.job import JobLimits, JobResult, JobSpec, make_job_spec
from nuclux.node.compute.config import PoolLimits
from nuclux.node.compute.pool import ComputePool

EXAMPLES = Path(__file__).parents[2] / "examples" / "jobs"
CEILING = JobLimits(
    fuel=10**11,
    memory_bytes=64 << 20,
    timeout_ms=20_000,
    stdout_bytes=1 << 20,
    stderr_bytes=1 << 20,
    output_bytes=16 << 20,
    scratch_bytes=32 << 20,
)
TEST_LIMITS = PoolLimits(
    ceiling=CEILING,
    compile_cpu_seconds=5,
    compile_timeout=20.0,
    kill_grace=1.0,
    spawn_timeout=20.0,
)
SMALL = JobLimits(
    fuel=10**9,
    memory_bytes=16 << 20,
    timeout_ms=10_000,
    stdout_bytes=64 << 10,
    stderr_bytes=64 << 10,
    output_bytes=1 << 20,
    scratch_bytes=4 << 20,
)


def example(name: str) -> bytes:
    return (EXAMPLES / name).read_bytes()


HOSTILE = example("testing/hostile.wasm")


def wat(text: str) -> bytes:
    return bytes(wasmtime.wat2wasm(text))


def spec(
    module: bytes,
    args: Sequence[str] = (),
    inputs: Mapping[str, bytes] | None = None,
    **changes: Any,
) -> JobSpec:
    """A job of ``module`` with the ``SMALL`` limits, changed by ``changes`` (limit names, or
    ``deterministic`` and ``seed``)."""
    flags = {k: changes.pop(k) for k in ("deterministic", "seed", "nonce") if k in changes}
    limits = JobLimits(**{**{n: getattr(SMALL, n) for n in SMALL.BOUNDS}, **changes})
    return make_job_spec(module, inputs or {}, list(args), limits=limits, **flags)


async def run(
    pool: ComputePool,
    module: bytes,
    args: Sequence[str] = (),
    inputs: Mapping[str, bytes] | None = None,
    **changes: Any,
) -> JobResult:
    return await pool.run(spec(module, args, inputs, **changes), module, inputs or {})


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def started_pool(slots: int, limits: PoolLimits = TEST_LIMITS) -> ComputePool:
    pool = ComputePool(slots, limits)
    await pool.start()
    return pool


async def closed_cleanly(pool: ComputePool) -> None:
    pids = pool.worker_pids()
    await pool.close()
    assert all(gone(pid) for pid in pids), "a worker outlived its pool"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def pool() -> AsyncIterator[ComputePool]:
    p = await started_pool(2)
    yield p
    await closed_cleanly(p)
