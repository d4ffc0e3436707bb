"""The job sees its scratch directory and nothing else of the host: host paths by absolute
or ../ paths, links it creates, a replaced /out, the environment."""

from __future__ import annotations

import pytest

from nuclux.core.job import JobStatus
from nuclux.node.compute.pool import ComputePool
from tests.compute import modules as m
from tests.compute.conftest import HOSTILE, run

pytestmark = pytest.mark.timeout(60)


async def test_host_paths_are_out_of_reach(pool: ComputePool) -> None:
    r = await run(pool, HOSTILE, ["hostpath"])
    assert r.ok
    lines = r.stdout.decode().splitlines()
    assert len(lines) == 6
    assert all(": refused (" in line for line in lines), lines
    assert b"root:" not in r.stdout
    assert b"READ" not in r.stdout


async def test_a_link_to_the_host_is_not_collected(pool: ComputePool) -> None:
    r = await run(pool, HOSTILE, ["symlink"])
    assert r.status is JobStatus.OUTPUT_LIMIT
    assert r.message == "/out/evil is a symbolic link: outputs must be regular files"
    assert r.outputs == {}
    assert r.stdout.startswith(b"/out/evil: refused (")  # not followed out of the sandbox
    assert b"absolute link made" not in r.stdout
    assert b"root:" not in r.stdout + r.stderr
    assert (await run(pool, m.TRIVIAL)).ok


async def test_a_replaced_out_directory_is_not_followed(pool: ComputePool) -> None:
    r = await run(pool, HOSTILE, ["outlink"], inputs={"secret.txt": b"input"})
    assert r.status is JobStatus.OUTPUT_LIMIT
    assert "/out is not a directory" in r.message
    assert r.outputs == {}


async def test_args_inputs_and_no_environment(pool: ComputePool) -> None:
    r = await run(pool, HOSTILE, ["env", "two words", "ünï"])
    assert r.stdout.decode() == "argc=4 env=0 [main] [env] [two words] [ünï]\n"
    # inputs are at /in, outputs start empty, and the next job sees none of this one's files
    first = await run(pool, HOSTILE, ["write", "left.txt", "5"], inputs={"a": b"1"})
    assert first.outputs == {"left.txt": b"xxxxx"}
    wc = await run(pool, HOSTILE, ["hostpath"])
    assert wc.ok
    for _ in range(2):  # both workers
        listing = await run(pool, HOSTILE, ["write", "again.txt", "1"])
        assert listing.outputs == {"again.txt": b"x"}
