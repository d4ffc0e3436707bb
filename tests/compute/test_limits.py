"""Each limit ends a misbehaving job with a clear reason, and the pool serves the next job:
fuel, wall clock (epoch and watchdog), linear memory, stack, stdout and stderr, the scratch
quota (bytes and entries) and the output caps."""

from __future__ import annotations

import pytest

from nuclux.core.job import JobStatus
from nuclux.node.compute.pool import ComputePool
from tests.compute import modules as m
from tests.compute.conftest import HOSTILE, SMALL, run

pytestmark = pytest.mark.timeout(60)


async def serves_next(pool: ComputePool) -> None:
    result = await run(pool, m.TRIVIAL)
    assert result.ok
    assert result.fuel_used > 0


async def test_trivial_and_exit_status(pool: ComputePool) -> None:
    ok = await run(pool, m.TRIVIAL)
    assert ok.ok
    assert ok.check() is ok
    assert ok.message == ""
    seven = await run(pool, m.EXIT_7)
    assert seven.status is JobStatus.EXITED
    assert seven.exit_code == 7
    assert seven.message == "exited with status 7"
    assert seven.result_hash != ok.result_hash


async def test_fuel_limit(pool: ComputePool) -> None:
    r = await run(pool, m.SPIN, fuel=50_000_000)
    assert r.status is JobStatus.FUEL_EXHAUSTED
    assert r.fuel_used == 50_000_000
    assert "fuel limit of 50000000 exhausted" in r.message
    await serves_next(pool)


async def test_wall_clock_limit_by_epoch(pool: ComputePool) -> None:
    r = await run(pool, m.SPIN, fuel=10**11, timeout_ms=300)
    assert r.status is JobStatus.TIMED_OUT
    assert "wall-clock limit of 300 ms" in r.message
    assert "watchdog" not in r.message  # the epoch deadline stopped it
    assert r.fuel_used == 10**11  # the count is lost on an epoch trap: charged the limit
    await serves_next(pool)


async def test_blocking_host_call_is_ended_by_the_watchdog(pool: ComputePool) -> None:
    r = await run(pool, HOSTILE, ["sleep", "3600"], timeout_ms=200)
    assert r.status is JobStatus.TIMED_OUT
    assert "watchdog killed the job" in r.message
    assert "blocked in a host call" in r.message
    assert r.fuel_used == SMALL.fuel
    await serves_next(pool)


async def test_memory_bomb_in_wat_traps_at_the_limit(pool: ComputePool) -> None:
    r = await run(pool, m.GROW_UNTIL_REFUSED, memory_bytes=8 << 20)
    assert r.status is JobStatus.TRAPPED
    assert "unreachable" in r.message
    assert "8388608 byte limit (memory_bytes)" in r.message
    assert r.memory_bytes <= 8 << 20
    await serves_next(pool)


async def test_memory_bomb_in_c_sees_malloc_fail(pool: ComputePool) -> None:
    r = await run(pool, HOSTILE, ["membomb"], memory_bytes=8 << 20)
    assert r.status is JobStatus.EXITED
    assert r.exit_code == 3
    assert b"malloc failed after" in r.stderr
    assert "memory_bytes" in r.message
    await serves_next(pool)


async def test_initial_memory_above_the_limit(pool: ComputePool) -> None:
    r = await run(pool, m.HUGE_INITIAL_MEMORY, memory_bytes=16 << 20)
    assert r.status is JobStatus.TRAPPED
    assert "memory" in r.message
    await serves_next(pool)


async def test_deep_recursion(pool: ComputePool) -> None:
    for module, args in ((m.RECURSE, []), (HOSTILE, ["recurse"])):
        r = await run(pool, module, args)
        assert r.status is JobStatus.TRAPPED
        assert "stack overflow" in r.message
    await serves_next(pool)


@pytest.mark.parametrize("fd", [1, 2])
async def test_huge_stdout_and_stderr(pool: ComputePool, fd: int) -> None:
    r = await run(pool, m.write_forever(fd), stdout_bytes=1000, stderr_bytes=3000)
    assert r.status is JobStatus.STDOUT_LIMIT
    name, cap = ("stdout", 1000) if fd == 1 else ("stderr", 3000)
    assert f"{name} exceeded its cap of {cap} bytes ({name}_bytes)" in r.message
    assert len(r.stdout if fd == 1 else r.stderr) == cap
    assert (r.stdout if fd == 1 else r.stderr).startswith(b"spam spam")
    await serves_next(pool)


async def test_scratch_quota_bytes(pool: ComputePool) -> None:
    r = await run(pool, HOSTILE, ["disk"], inputs={"in.bin": bytes(1 << 20)}, scratch_bytes=3 << 20)
    assert r.status is JobStatus.DISK_QUOTA
    assert "above its quota of 3145728 (scratch_bytes)" in r.message
    assert r.outputs == {}
    await serves_next(pool)


async def test_scratch_quota_entries(pool: ComputePool) -> None:
    r = await run(pool, HOSTILE, ["files"])
    assert r.status is JobStatus.DISK_QUOTA
    assert "more than 4096 entries" in r.message
    await serves_next(pool)


async def test_outputs_are_collected_within_their_cap(pool: ComputePool) -> None:
    ok = await run(pool, HOSTILE, ["write", "a.txt", "1000"], output_bytes=1000)
    assert ok.ok
    assert ok.outputs == {"a.txt": b"x" * 1000}
    over = await run(pool, HOSTILE, ["write", "a.txt", "1001"], output_bytes=1000)
    assert over.status is JobStatus.OUTPUT_LIMIT
    assert "(output_bytes)" in over.message
    assert over.outputs == {}
    bad_name = await run(pool, HOSTILE, ["write", ".hidden", "1"])
    assert bad_name.status is JobStatus.OUTPUT_LIMIT
    assert "output names are" in bad_name.message
    await serves_next(pool)
