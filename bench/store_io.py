"""Shard store throughput beside the raw disk ceiling, as ``name=value`` lines.

    .venv/bin/python bench/store_io.py [--mib 1024] [--object-mib 64] [--dir DIR] [--reps 3]

``disk_write_fsync_MBps`` writes the same objects with plain ``os.write`` in 1 MiB chunks and one
fsync per file: the ceiling for ``store_write_MBps`` (one streamed writer, 1 MiB chunks). The
two are interleaved object by object, so the (very noisy) disk hits both alike.
``store_write_4_MBps`` writes all objects again with concurrent writers. Reads come from the
page cache (the files were just written), so ``store_read_MBps`` is compared with
``cached_read_MBps``, plain reads of the same files. Each figure is the median of ``--reps``
runs. MB = 10^6 bytes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from nuclux.node.store import ShardStore

MiB = 1 << 20


def objects(count: int, size: int) -> list[bytes]:
    base = os.urandom(size)
    return [i.to_bytes(8, "big") + base[8:] for i in range(count)]


def raw_write_one(path: Path, data: bytes) -> float:
    t = time.perf_counter()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        for off in range(0, len(view), MiB):
            os.write(fd, view[off : off + MiB])
        os.fsync(fd)
    finally:
        os.close(fd)
    return time.perf_counter() - t


def raw_read(d: Path, count: int) -> float:
    t = time.perf_counter()
    for i in range(count):
        fd = os.open(d / f"f{i}", os.O_RDONLY)
        try:
            while os.read(fd, MiB):
                pass
        finally:
            os.close(fd)
    return time.perf_counter() - t


async def store_write_one(store: ShardStore, lease: int, oid: bytes, data: bytes) -> float:
    t = time.perf_counter()
    async with store.writer(lease, oid, size=len(data)) as w:
        view = memoryview(data)
        for off in range(0, len(view), MiB):
            await w.write(view[off : off + MiB])
        await w.commit()
    return time.perf_counter() - t


async def store_write_parallel(store: ShardStore, blobs: list[bytes], lease: int) -> float:
    """All objects again, four writers at a time."""
    sem = asyncio.Semaphore(4)

    async def one(i: int, data: bytes) -> None:
        async with sem:
            await store_write_one(store, lease, b"p%d" % i, data)

    t = time.perf_counter()
    async with asyncio.TaskGroup() as tg:
        for i, data in enumerate(blobs):
            tg.create_task(one(i, data))
    return time.perf_counter() - t


async def store_read(store: ShardStore, count: int, lease: int) -> float:
    t = time.perf_counter()
    for i in range(count):
        async for _ in store.read(lease, b"o%d" % i, chunk_size=MiB):
            pass
    return time.perf_counter() - t


async def main(args: argparse.Namespace) -> dict[str, float]:
    base = Path(tempfile.mkdtemp(prefix="nuclux-bench-", dir=args.dir))
    count = max(1, args.mib // args.object_mib)
    blobs = objects(count, args.object_mib * MiB)
    total = count * args.object_mib * MiB
    runs: dict[str, list[float]] = {}
    try:
        store = await ShardStore.open(base / "store", 1 << 50, grace_seconds=0)
        try:
            for rep in range(args.reps):
                raw = base / f"raw{rep}"
                raw.mkdir()
                lease = rep + 1
                await store.set_lease(lease, 3 * total, 0)
                os.sync()  # start each run with no dirty pages from the previous one
                t_raw = t_store = 0.0
                for i, data in enumerate(blobs):  # interleaved: disk noise hits both alike
                    t_raw += raw_write_one(raw / f"f{i}", data)
                    t_store += await store_write_one(store, lease, b"o%d" % i, data)
                runs.setdefault("disk_write_fsync_MBps", []).append(t_raw)
                runs.setdefault("store_write_MBps", []).append(t_store)
                runs.setdefault("cached_read_MBps", []).append(raw_read(raw, count))
                runs.setdefault("store_read_MBps", []).append(await store_read(store, count, lease))
                runs.setdefault("store_write_4_MBps", []).append(
                    await store_write_parallel(store, blobs, lease)
                )
                shutil.rmtree(raw)
                await store.close_lease(lease, 0)
                await store.gc(1)
        finally:
            await store.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return {k: total / statistics.median(v) / 1e6 for k, v in runs.items()}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=int, default=1024, help="bytes written per run, in MiB")
    p.add_argument("--object-mib", type=int, default=64, help="object size in MiB")
    p.add_argument("--dir", default=None, help="where to write (default: the temp directory)")
    p.add_argument("--reps", type=int, default=3)
    results = asyncio.run(main(p.parse_args()))
    for name in sorted(results):
        print(f"{name}={results[name]:.0f}")
    print(
        f"store_write_vs_disk={results['store_write_MBps'] / results['disk_write_fsync_MBps']:.2f}"
    )
