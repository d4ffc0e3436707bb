"""Write and read throughput to one node over TLS on loopback, beside the bare TLS ceiling.

    .venv/bin/python -m bench.node_io [--mib 512] [--object-mib 64] [--streams 8] [--reps 3]
                                      [--loop uvloop|asyncio]
                                      [--same-process] [--dir DIR] [--profile DIR]

The node (``bench._node_fixture``: embedded chain, an accepted storage lease of consumer 0 on
provider 0, a caught-up ``ChainView``, a ``ShardStore`` in a temp directory, ``NodeService``
served by aiohttp over TLS 1.3 on 127.0.0.1) runs in a child process, as a node would; this
process is the consumer, using ``NodeClient``. ``--same-process`` runs the node on this
process's event loop instead (one core for both ends).

Each repetition moves ``--mib`` MiB of random objects of ``--object-mib`` MiB (distinct
content every time) in six interleaved phases, so machine noise hits them alike:

* ``tls_ceiling_MBps``: one TLS stream from this process to a bare asyncio server on the
  node's loop, with the node's ``server_ssl_context`` and certificate and the pinned
  ``client_ssl_context``, carrying the same objects in 1 MiB writes that the server reads and
  discards (no HTTP, hashing or disk); ``tls_ceiling_read_MBps``: the reverse direction, the
  server sending 1 MiB writes that this process reads and discards.
* ``write_1_MBps``: one ``NodeClient`` PUTs the objects one after another (signing, aiohttp,
  the server's checks, store write, hash, fsync and commit, the response). The client passes
  each object's SHA-256, computed before the clock starts, as the storage SDK does (it hashes
  blocks while encoding them, off the network path).
* ``disk_ceiling_MBps``: the same objects written as plain files (1 MiB writes, one fsync
  each) on the store's file system, just before ``write_1``: the node's other ceiling.
* ``read_1_MBps``: the same client GETs them back whole into one reused buffer
  (``NodeClient.get_into``, which checks the SHA-256 the node reports), as the storage SDK
  downloads blocks into its segment buffers. The blobs were just written, so they come from
  the page cache.
* ``write_8_MBps`` / ``read_8_MBps``: ``--streams`` clients, each with its own connection,
  write (then read) a share of the objects at the same time.

Each figure is the median over ``--reps`` repetitions, MB = 10^6 bytes. The objects are
deleted after each repetition (untimed). ``write_1_vs_ceiling`` is ``write_1`` over
``tls_ceiling``; ``read_1_vs_ceiling`` is ``read_1`` over ``tls_ceiling_read`` (the same
direction of travel); ``write_1_vs_disk`` is ``write_1`` over ``disk_ceiling``. The goal is
one stream at 0.70 of its TLS ceiling or better.

``--profile DIR`` writes cProfile data of both processes (``client.prof``, ``node.prof``) over
the whole run; only the event-loop threads are profiled, not the store's I/O threads.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import hashlib
import os
import statistics
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

from bench._node_fixture import NodeEndpoints, node_process, serve_node
from nuclux import aio
from nuclux.allocator import tune_allocator
from nuclux.net.client import NodeClient
from nuclux.net.tls import client_ssl_context

MiB = 1 << 20
CHUNK = MiB


def make_objects(rep: int, phase: int, count: int, size: int, base: bytes) -> list[bytes]:
    """``count`` objects of ``size`` bytes, distinct across repetitions and phases."""
    return [
        rep.to_bytes(4, "big") + phase.to_bytes(4, "big") + i.to_bytes(8, "big") + base[16:size]
        for i in range(count)
    ]


def object_id(phase: int, i: int) -> bytes:
    return b"bench-%d-%d" % (phase, i)


class Bench:
    """The clients and the bare TLS stream, connected once (handshakes stay untimed)."""

    def __init__(self, ends: NodeEndpoints, streams: int) -> None:
        self.ends = ends
        self.fingerprint = bytes.fromhex(ends.fingerprint)
        key = bytes.fromhex(ends.consumer_key)
        self.clients = [NodeClient(ends.url, self.fingerprint, key) for _ in range(streams)]
        self.raw: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def connect(self) -> None:
        await asyncio.gather(*(c.info() for c in self.clients))  # one TLS connection each
        self.raw = await asyncio.open_connection(
            "127.0.0.1",
            self.ends.raw_port,
            ssl=client_ssl_context(self.fingerprint),
            limit=CHUNK,
        )

    async def close(self) -> None:
        for c in self.clients:
            await c.close()
        if self.raw is not None:
            _, writer = self.raw
            writer.write(b"q" + bytes(8))
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    # ------------------------------------------------------------------ ceiling

    async def ceiling_write(self, blobs: list[bytes]) -> None:
        assert self.raw is not None
        reader, writer = self.raw
        writer.write(b"w" + sum(map(len, blobs)).to_bytes(8, "big"))
        for data in blobs:
            view = memoryview(data)
            for off in range(0, len(view), CHUNK):
                writer.write(view[off : off + CHUNK])
                await writer.drain()
        if await reader.readexactly(1) != b"k":
            raise RuntimeError("the TLS sink did not acknowledge")

    async def ceiling_read(self, blobs: list[bytes]) -> None:
        assert self.raw is not None
        reader, writer = self.raw
        left = sum(map(len, blobs))
        writer.write(b"r" + left.to_bytes(8, "big"))
        while left:
            data = await reader.read(min(left, CHUNK))
            if not data:
                raise RuntimeError("the TLS source closed early")
            left -= len(data)

    # ------------------------------------------------------------------ node

    async def _put_all(
        self, client: NodeClient, phase: int, items: list[tuple[int, bytes]], hashes: list[bytes]
    ) -> None:
        for i, data in items:
            stored = await client.put(self.ends.lease, object_id(phase, i), data, hashes[i])
            if stored.size != len(data):
                raise RuntimeError(f"the node stored {stored.size} of {len(data)} bytes")

    async def _get_all(
        self, client: NodeClient, phase: int, items: list[tuple[int, bytes]]
    ) -> None:
        buffer = bytearray(max(map(len, (d for _, d in items)), default=0))
        for i, data in items:
            got = await client.get_into(self.ends.lease, object_id(phase, i), buffer)
            if got != len(data):  # the client checked its SHA-256 already
                raise RuntimeError(f"read {got} of {len(data)} bytes")

    def _shares(self, blobs: list[bytes], n: int) -> list[list[tuple[int, bytes]]]:
        return [list(enumerate(blobs))[k::n] for k in range(n)]

    async def write(
        self, phase: int, blobs: list[bytes], hashes: list[bytes], streams: int
    ) -> None:
        shares = self._shares(blobs, streams)
        await asyncio.gather(
            *(self._put_all(self.clients[k], phase, shares[k], hashes) for k in range(streams))
        )

    async def read(self, phase: int, blobs: list[bytes], streams: int) -> None:
        shares = self._shares(blobs, streams)
        await asyncio.gather(
            *(self._get_all(self.clients[k], phase, shares[k]) for k in range(streams))
        )

    async def delete(self, phase: int, count: int) -> None:
        for i in range(count):
            await self.clients[0].delete(self.ends.lease, object_id(phase, i))


def disk_write(directory: Path, blobs: list[bytes]) -> float:
    """Seconds to write ``blobs`` as files with plain 1 MiB writes and one fsync each."""
    start = time.perf_counter()
    for i, data in enumerate(blobs):
        path = directory / f"o{i}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            for off in range(0, len(view), CHUNK):
                os.write(fd, view[off : off + CHUNK])
            os.fsync(fd)
        finally:
            os.close(fd)
    elapsed = time.perf_counter() - start
    for i in range(len(blobs)):
        (directory / f"o{i}").unlink()
    return elapsed


async def timed(work: Awaitable[None]) -> float:
    """Seconds ``work`` (a coroutine, not started yet) takes."""
    start = time.perf_counter()
    await work
    return time.perf_counter() - start


@contextlib.asynccontextmanager
async def _scratch(where: str | None) -> AsyncIterator[Path]:
    with tempfile.TemporaryDirectory(prefix="nuclux-bench-disk-", dir=where) as tmp:
        yield Path(tmp)


@contextlib.asynccontextmanager
async def node(args: argparse.Namespace) -> AsyncIterator[NodeEndpoints]:
    if args.same_process:
        with tempfile.TemporaryDirectory(prefix="nuclux-bench-node-", dir=args.dir) as tmp:
            async with serve_node(Path(tmp)) as ends:
                yield ends
    else:
        profile = None if args.profile is None else str(args.profile / "node.prof")
        async with node_process(args.dir, profile=profile, loop=args.loop) as ends:
            yield ends


async def run(args: argparse.Namespace) -> dict[str, float]:
    count = args.mib // args.object_mib
    if count < 1 or count % args.streams:
        raise SystemExit(f"--mib / --object-mib = {count} objects must be a multiple of --streams")
    size = args.object_mib * MiB
    total = count * size
    base = os.urandom(size)
    times: dict[str, list[float]] = {}

    def note(name: str, seconds: float) -> None:
        times.setdefault(name, []).append(seconds)

    async with node(args) as ends, _scratch(args.dir) as disk_dir:
        bench = Bench(ends, args.streams)
        try:
            await bench.connect()
            for rep in range(args.reps):
                blobs = make_objects(rep, 0, count, size, base)
                note("tls_ceiling_MBps", await timed(bench.ceiling_write(blobs)))
                note("tls_ceiling_read_MBps", await timed(bench.ceiling_read(blobs)))
                for phase, streams, suffix in ((1, 1, "1"), (2, args.streams, "8")):
                    blobs = make_objects(rep, phase, count, size, base)
                    hashes = [hashlib.sha256(b).digest() for b in blobs]
                    if phase == 1:
                        os.sync()
                        note("disk_ceiling_MBps", disk_write(disk_dir, blobs))
                    os.sync()  # no dirty pages of earlier phases under this one's fsyncs
                    note(
                        f"write_{suffix}_MBps",
                        await timed(bench.write(phase, blobs, hashes, streams)),
                    )
                    note(
                        f"read_{suffix}_MBps",
                        await timed(bench.read(phase, blobs, streams)),
                    )
                    await bench.delete(phase, count)
        finally:
            await bench.close()
    return {name: total / statistics.median(t) / 1e6 for name, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=int, default=512, help="MiB moved per phase and repetition")
    p.add_argument("--object-mib", type=int, default=64, help="object size in MiB")
    p.add_argument("--streams", type=int, default=8, help="concurrent streams (named _8)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--same-process", action="store_true", help="run the node on this loop")
    p.add_argument(
        "--loop", choices=("asyncio", "uvloop"), default="uvloop", help="both processes' loop"
    )
    p.add_argument("--dir", default=None, help="where the store lives (default: temp dir)")
    p.add_argument("--profile", type=Path, default=None, help="write cProfile data here")
    args = p.parse_args()
    profiler = None
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        profiler = cProfile.Profile()
        profiler.enable()
    tune_allocator()  # as the `nuclux` CLI does
    started = time.perf_counter()
    r = aio.run(run(args), args.loop)
    elapsed = time.perf_counter() - started
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(args.profile / "client.prof")
    names = ("write_1", "read_1", "write_8", "read_8", "tls_ceiling", "tls_ceiling_read")
    for name in (*names, "disk_ceiling"):
        print(f"{name}_MBps={r[name + '_MBps']:.0f}")
    print(f"write_1_vs_ceiling={r['write_1_MBps'] / r['tls_ceiling_MBps']:.2f}")
    print(f"write_1_vs_disk={r['write_1_MBps'] / r['disk_ceiling_MBps']:.2f}")
    print(f"read_1_vs_ceiling={r['read_1_MBps'] / r['tls_ceiling_read_MBps']:.2f}")
    print(f"object_MiB={args.object_mib}")
    print(f"objects={args.mib // args.object_mib}")
    print(f"bytes_per_phase={args.mib * MiB}")
    print(f"streams={args.streams}")
    print(f"reps={args.reps}")
    print(f"node={'same-process' if args.same_process else 'child-process'}")
    print(f"loop={args.loop}")
    print(f"bench_seconds={elapsed:.0f}")


if __name__ == "__main__":
    main()
