"""Modules and specs that cannot run are refused with the reason, before or at compile
time, and the pool goes on serving."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from nuclux.core.job import JobLimits, JobRejected
from nuclux.errors import IntegrityError
from nuclux.node.compute.pool import ComputePool
from tests.compute import modules as m
from tests.compute.conftest import CEILING, example, run, spec

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(
    ("module", "reason"),
    [
        (b'(module (func (export "_start")))', r"bad magic \(WebAssembly text"),
        (b"\x7fELF\x02\x01\x01\x00" + bytes(64), "bad magic"),
        (b"\0asm", "shorter than its 8-byte header"),
        (b"\0asm\x0d\x00\x01\x00" + bytes(8), "components are not supported"),
        (b"\0asm\x01\x00\x00\x00\x01\xff\xff\xff\xff\x0f", "invalid WebAssembly module"),
        (m.UNKNOWN_IMPORT, r"imports env\.system, wasi_snapshot_preview1\.sock_open"),
        (m.LIBRARY, "not a WASI command module"),
        (m.START_WITH_PARAMS, "not a WASI command module"),
    ],
)
async def test_bad_modules_are_rejected(pool: ComputePool, module: bytes, reason: str) -> None:
    job = dataclasses.replace(spec(m.TRIVIAL), module_hash=hashlib.sha256(module).digest())
    with pytest.raises(JobRejected, match=reason):
        await pool.run(job, module)
    assert (await run(pool, m.TRIVIAL)).ok


async def test_module_and_inputs_must_match_the_spec(pool: ComputePool) -> None:
    job = spec(m.TRIVIAL, inputs={"a": b"1"})
    with pytest.raises(IntegrityError, match="module_hash"):
        await pool.run(job, m.EXIT_7, {"a": b"1"})
    with pytest.raises(IntegrityError, match="does not match"):
        await pool.run(job, m.TRIVIAL, {"a": b"2"})
    with pytest.raises(IntegrityError, match="differ"):
        await pool.run(job, m.TRIVIAL, {})
    assert pool.busy == 0


async def test_limits_above_the_node_ceiling(pool: ComputePool) -> None:
    limits = dataclasses.replace(CEILING, fuel=CEILING.fuel + 1, memory_bytes=128 << 20)
    job = dataclasses.replace(spec(m.TRIVIAL), limits=limits)
    with pytest.raises(JobRejected, match="more than this node allows in fuel, memory_bytes"):
        await pool.run(job, m.TRIVIAL)
    assert JobLimits().exceeds(CEILING)  # the defaults ask for more than this test node


async def test_a_big_valid_example_compiles_and_runs(pool: ComputePool) -> None:
    r = await run(pool, example("pi.wasm"), ["1000", "1"])
    assert r.ok
    assert r.stdout.startswith(b"pi=")
