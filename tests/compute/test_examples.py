"""The example jobs: the committed modules are the ones the manifest names, and each
computes what it says."""

from __future__ import annotations

import hashlib
import re

import pytest

from nuclux.node.compute.pool import ComputePool
from tests.compute.conftest import EXAMPLES, example, run

pytestmark = pytest.mark.timeout(60)


def test_committed_modules_match_the_manifest() -> None:
    entries = [
        line.split()
        for line in (EXAMPLES / "MANIFEST").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    built = sorted(str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*.wasm"))
    sources = sorted(str(p.relative_to(EXAMPLES))[:-2] + ".wasm" for p in EXAMPLES.rglob("*.c"))
    assert sorted(name for _, name in entries) == built == sources
    for digest, name in entries:
        assert hashlib.sha256(example(name)).hexdigest() == digest, f"{name} is stale"


async def test_sha256(pool: ComputePool) -> None:
    inputs = {"a.txt": b"abc", "b.bin": bytes(range(256)) * 1000, "empty": b""}
    r = await run(pool, example("sha256.wasm"), inputs=inputs)
    assert r.ok
    expected = "".join(f"{hashlib.sha256(d).hexdigest()}  /in/{n}\n" for n, d in inputs.items())
    assert r.stdout.decode() == expected
    assert r.outputs == {"sha256.txt": expected.encode()}
    one = await run(pool, example("sha256.wasm"), ["/in/a.txt"], inputs=inputs)
    assert one.stdout.startswith(hashlib.sha256(b"abc").hexdigest().encode())


async def test_word_count(pool: ComputePool) -> None:
    text = b"the quick brown fox\njumps over\n\tthe lazy dog\n" * 50
    r = await run(pool, example("wc.wasm"), inputs={"fox.txt": text, "one": b"word"})
    assert r.ok
    lines = r.stdout.decode().splitlines()
    assert lines[0].split() == ["150", "450", str(len(text)), "/in/fox.txt"]
    assert lines[1].split() == ["0", "1", "4", "/in/one"]
    assert lines[2].split() == ["150", "451", str(len(text) + 4), "total"]
    assert r.outputs["wc.txt"] == r.stdout
    missing = await run(pool, example("wc.wasm"), ["/in/nope"])
    assert missing.exit_code == 1
    assert b"/in/nope: No such file or directory" in missing.stderr


async def test_monte_carlo_pi(pool: ComputePool) -> None:
    a = await run(pool, example("pi.wasm"), ["200000", "42"])
    b = await run(pool, example("pi.wasm"), ["200000", "42"])
    assert a.ok
    assert a.stdout == b.stdout
    match = re.fullmatch(rb"pi=(\d\.\d+) samples=200000 inside=(\d+)\n", a.stdout)
    assert match
    assert 3.1 < float(match[1]) < 3.2
    assert 4 * int(match[2]) / 200000 == pytest.approx(float(match[1]), abs=1e-6)
    usage = await run(pool, example("pi.wasm"))
    assert usage.exit_code == 2
    assert usage.stderr == b"usage: pi SAMPLES [SEED]\n"
