"""The deterministic profile: seeded random_get, a fixed clock and canonical NaNs make two
runs agree bit for bit; the ordinary profile reads the host's clock and entropy."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from nuclux.core.job import JobStatus
from nuclux.node.compute import supervise
from nuclux.node.compute.pool import ComputePool
from nuclux.node.compute.wasi_host import (
    CLOCK_STEP_NS,
    FIXED_REALTIME_NS,
    DeterministicHost,
    seeded_stream,
)
from tests.compute.conftest import HOSTILE, example, run

pytestmark = pytest.mark.timeout(60)
SEED = hashlib.sha256(b"nuclux-test/seed").digest()


def test_seeded_stream_is_blake2b_in_counter_mode_and_chunking_free() -> None:
    block0 = hashlib.blake2b(bytes(8), key=SEED, digest_size=64).digest()
    block1 = hashlib.blake2b((1).to_bytes(8, "big"), key=SEED, digest_size=64).digest()
    assert seeded_stream(SEED, 100) == (block0 + block1)[:100]
    host = DeterministicHost()
    host.reset(SEED)
    drawn = b"".join(host.random_bytes(n) for n in (0, 1, 63, 64, 65, 200, 7))
    assert drawn == seeded_stream(SEED, len(drawn))
    host.reset(SEED)
    assert host.random_bytes(10) == seeded_stream(SEED, 10)
    assert [host.now(0), host.now(1)] == [FIXED_REALTIME_NS + CLOCK_STEP_NS, 2 * CLOCK_STEP_NS]


def test_worker_statuses_are_the_core_ones() -> None:
    assert (supervise.EXITED, supervise.TRAPPED, supervise.FUEL_EXHAUSTED, supervise.TIMED_OUT) == (
        JobStatus.EXITED,
        JobStatus.TRAPPED,
        JobStatus.FUEL_EXHAUSTED,
        JobStatus.TIMED_OUT,
    )
    assert (supervise.STDOUT_LIMIT, supervise.DISK_QUOTA, supervise.OUTPUT_LIMIT) == (
        JobStatus.STDOUT_LIMIT,
        JobStatus.DISK_QUOTA,
        JobStatus.OUTPUT_LIMIT,
    )


async def test_entropy_and_clocks_are_seeded(pool: ComputePool) -> None:
    a, b = await asyncio.gather(
        run(pool, HOSTILE, ["entropy"], deterministic=True, seed=SEED),
        run(pool, HOSTILE, ["entropy"], deterministic=True, seed=SEED),
    )  # on two workers at once
    assert a.ok
    assert a.stdout == b.stdout
    assert a.result_hash == b.result_hash
    random_hex, *clocks = a.stdout.decode().split()
    assert bytes.fromhex(random_hex) == seeded_stream(SEED, 16)
    assert clocks == ["946684800.000001000", "0.000002000", "946684800.000003000"]
    other = await run(pool, HOSTILE, ["entropy"], deterministic=True, seed=bytes(32))
    assert other.stdout.split()[0] != a.stdout.split()[0]
    assert other.stdout.split()[1:] == a.stdout.split()[1:]


async def test_the_ordinary_profile_uses_the_host(pool: ComputePool) -> None:
    a = await run(pool, HOSTILE, ["entropy"], seed=SEED)  # the seed is ignored
    b = await run(pool, HOSTILE, ["entropy"], seed=SEED)
    assert a.stdout.split()[0] != b.stdout.split()[0]
    assert not a.stdout.split()[1].startswith(b"946684800.")


async def test_nans_are_canonical(pool: ComputePool) -> None:
    r = await run(pool, HOSTILE, ["float"], deterministic=True, seed=SEED)
    assert r.stdout == b"7ff8000000000000 " * 4 + b"7fc00000\n"


async def test_pi_from_the_job_seed_agrees_across_runs(pool: ComputePool) -> None:
    pi = example("pi.wasm")
    runs = [await run(pool, pi, ["20000"], deterministic=True, seed=SEED) for _ in range(2)]
    assert runs[0].ok
    assert runs[0].result_hash == runs[1].result_hash
    assert runs[0].fuel_used == runs[1].fuel_used
    reseeded = await run(pool, pi, ["20000"], deterministic=True, seed=bytes(32))
    assert reseeded.result_hash != runs[0].result_hash
