"""kill -9 at random moments: a child process writes, replaces and deletes objects in a loop and
reports each commit; after every kill the store reopens consistent, with every reported object
present and correct, nothing unverifiable visible, no temp files, no orphan blobs."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from nuclux.node.store import ShardStore
from tests.node.test_store_support import blob_files, get, open_store, sha, tmp_files

ROUNDS = 5
LEASES = (1, 2)

# The child derives every op and every content from (round, step), so the parent can recompute.
CHILD = r"""
import asyncio, hashlib, sys
from pathlib import Path
from nuclux.errors import ObjectNotFound
from nuclux.node.store import ShardStore

def content(oid: bytes, version: int) -> bytes:
    seed = hashlib.sha256(oid + b"/%d" % version).digest()
    if seed[3] % 5 == 0:  # shared content across ids and leases: exercises refcounts
        return b"shared-%d|" % (seed[4] % 3) * 4000
    size = 1 + int.from_bytes(seed[:3], "big") % 400_000
    return (seed * (size // 32 + 1))[:size]

def op(round_no: int, step: int) -> tuple[str, int, bytes, int]:
    h = hashlib.sha256(b"op/%d/%d" % (round_no, step)).digest()
    kind = "delete" if h[0] % 6 == 0 else "put"
    return kind, 1 + h[1] % 2, b"obj-%02d" % (h[2] % 30), round_no * 1_000_000 + step

async def main(root: str, round_no: int) -> None:
    store = await ShardStore.open(Path(root), 1 << 40, grace_seconds=10)
    for lease in (1, 2):
        await store.set_lease(lease, 1 << 36, None)
    print("ready", flush=True)
    step = 0
    while True:
        kind, lease, oid, version = op(round_no, step)
        print(f"B {kind} {lease} {oid.hex()} {version}", flush=True)
        if kind == "delete":
            try:
                await store.delete(lease, oid)
            except ObjectNotFound:
                pass
        else:
            data = content(oid, version)
            async with store.writer(lease, oid, size=len(data)) as w:
                for i in range(0, len(data), 1 << 16):
                    await w.write(data[i : i + (1 << 16)])
                await w.commit()
        print("C", flush=True)
        step += 1

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""

Key = tuple[int, bytes]
State = dict[Key, int]  # object -> version of its content


def content(oid: bytes, version: int) -> bytes:
    seed = hashlib.sha256(oid + b"/%d" % version).digest()
    if seed[3] % 5 == 0:
        return b"shared-%d|" % (seed[4] % 3) * 4000
    size = 1 + int.from_bytes(seed[:3], "big") % 400_000
    return (seed * (size // 32 + 1))[:size]


def run_child(root: Path, log: Path, round_no: int, delay: float) -> str:
    """Start the child, let it work ``delay`` s after it is ready, SIGKILL it; its output."""
    with log.open("w") as out, (log.with_suffix(".err")).open("w") as err:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(root), str(round_no)],
            stdout=out,
            stderr=err,
            cwd=Path(__file__).resolve().parents[2],
        )
        try:
            deadline = time.monotonic() + 30
            while "ready" not in log.read_text():
                if child.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"child did not start: {log.with_suffix('.err').read_text()}"
                    )
                time.sleep(0.01)
            time.sleep(delay)
            if child.poll() is not None:
                raise AssertionError(
                    f"child died on its own: {log.with_suffix('.err').read_text()}"
                )
        finally:
            if child.poll() is None:
                os.kill(child.pid, signal.SIGKILL)
            child.wait(timeout=30)
    return log.read_text()


def replay(state: State, output: str) -> tuple[State, State, int]:
    """Apply the child's committed ops; return (before, after) the one op cut by the kill."""
    committed = 0
    pending: State | None = None
    for line in output.splitlines():
        parts = line.split()
        if parts and parts[0] == "B" and len(parts) == 5:
            kind, lease, oid, version = parts[1], int(parts[2]), bytes.fromhex(parts[3]), parts[4]
            pending = dict(state)
            if kind == "delete":
                pending.pop((lease, oid), None)
            else:
                pending[(lease, oid)] = int(version)
        elif line == "C" and pending is not None:
            state, pending, committed = pending, None, committed + 1
    return state, (pending if pending is not None else state), committed


async def verify(store: ShardStore, root: Path, before: State, after: State) -> State:
    """The store must equal ``before`` or ``after`` (the op in flight), object by object."""
    actual: State = {}
    digests: set[bytes] = set()
    for lease in LEASES:
        total = 0
        for info in await store.list_objects(lease, limit=10_000):
            key = (lease, info.object_id)
            data = await get(store, lease, info.object_id)
            assert sha(data) == info.sha256, f"{key} does not hash to its recorded sha256"
            assert len(data) == info.size, f"{key} has the wrong size"
            options = {v for v in (before.get(key), after.get(key)) if v is not None}
            match = [v for v in options if sha(content(info.object_id, v)) == info.sha256]
            assert match, f"{key} holds content the child never committed"
            actual[key] = match[0]
            total += info.size
            digests.add(info.sha256)
        assert (await store.lease_usage(lease)).used_bytes == total
    assert actual in (before, after), "the store is neither the old nor the new state"
    assert tmp_files(root) == []
    assert blob_files(root) == digests, "orphan or missing blob files"
    return actual


async def test_kill_9_at_random_moments_leaves_a_consistent_store(tmp_path: Path) -> None:
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    root = tmp_path / "store"
    state: State = {}
    commits = 0
    for round_no in range(1, ROUNDS + 1):
        delay = rng.uniform(0.1, 0.5)
        output = run_child(root, tmp_path / f"child-{round_no}.log", round_no, delay)
        before, after, n = replay(state, output)
        commits += n
        async with await open_store(root) as store:
            report = store.check_report
            assert report.objects_dropped == 0, f"seed {seed}: committed data lost: {report}"
            assert report.refs_repaired == report.usage_repaired == 0, report.summary()
            state = await verify(store, root, before, after)
    assert commits >= ROUNDS, f"seed {seed}: the child committed too little to test anything"
