"""What a large file index costs: a put of one small file, and a full listing, as
``name=value`` lines.

    .venv/bin/python -m bench.index [--files 30000] [--puts 5] [--dir DIR]

The network is ``bench.storage``'s: a devnet (anvil) and 8 provider nodes as separate
processes on loopback. This process is the consumer (devnet account 1, posted-price leases,
RS(4,8)). A first put of 4 KiB opens the account's leases; then ``--files`` entries are added
to its index directly (their files are not stored: the figures are about the index) and
flushed.

* ``index_files``: the entries in the index.
* ``index_first_write_s``: that flush (every page new, on up to five leases).
* ``index_ls_s``: a fresh client's full read of the index (``nuclux ls`` without checks),
  start-up excluded. ``index_ls_cached_s``: the same on a device that keeps the pages it saw
  (``StorageSettings.index_cache``, as the CLI does), read once before.
* ``put_small_file_s``: a fresh client's put of one 4 KiB file and the flush after it (what
  ``nuclux put`` costs after start-up), the median of ``--puts``.
* ``put_index_bytes``: the bytes of file-index objects that put sent to the providers (all
  copies), the median of ``--puts``.

Everything started here is stopped by PID in ``finally`` blocks, bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench._devnet import network
from bench.storage import DAYS, EPOCH, NODES, K, N, bench_settings, consumer, emit
from nuclux.chain.devnet import dev_account
from nuclux.core.file_index import IndexEntry
from nuclux.core.types import LeaseId
from nuclux.net.client import NodeClient

SMALL = 4096


class IndexBytes:
    """Counts the bytes of ``i/...`` objects this process sends to nodes."""

    def __init__(self) -> None:
        self.sent = 0
        real_batch, real_put = NodeClient.put_batch, NodeClient.put
        meter = self

        async def put_batch(
            self: NodeClient, lease_id: int, items: Sequence[tuple[bytes, bytes]]
        ) -> Any:
            meter.sent += sum(len(d) for oid, d in items if oid.startswith(b"i/"))
            return await real_batch(self, lease_id, items)

        async def put(
            self: NodeClient, lease_id: int, object_id: bytes, data: Any, *a: Any, **kw: Any
        ) -> Any:
            if object_id.startswith(b"i/"):
                meter.sent += len(data)
            return await real_put(self, lease_id, object_id, data, *a, **kw)

        NodeClient.put_batch = put_batch  # type: ignore[method-assign]
        NodeClient.put = put  # type: ignore[method-assign]


async def measure(args: argparse.Namespace, state: Path, files: Path, rpc_url: str) -> None:
    dep = state / "deployment.json"
    key = "0x" + bytes(dev_account(1).key).hex()
    first = files / "first.bin"
    first.write_bytes(os.urandom(SMALL))
    async with consumer(rpc_url, dep, key) as client:
        await client.put(first, k=K, n=N, days=DAYS)
        await client.flush()
        lease = LeaseId((await client.ctx.leases.mine())[0].id)
        for i in range(args.files):
            fid = hashlib.sha256(b"bench-index/%d" % i).digest()[:16]
            name = f"photos/{i:06d}.jpg"
            client.ctx.index.put(IndexEntry(fid, name, i, 1_700_000_000, 1, (lease,) * 3))
        start = time.perf_counter()
        await client.ctx.index.flush()
        emit("index_first_write_s", time.perf_counter() - start)
    async with consumer(rpc_url, dep, key) as client:
        start = time.perf_counter()
        listed = await client.ctx.index.current()
        emit("index_ls_s", time.perf_counter() - start)
        emit("index_files", len(listed.entries))
    cached = dataclasses.replace(bench_settings(), index_cache=str(files / "index-pages"))
    for step in ("fill", "timed"):  # as the CLI lists: the pages it saw kept on the device
        async with consumer(rpc_url, dep, key, cached) as client:
            start = time.perf_counter()
            await client.ctx.index.current()
            if step == "timed":
                emit("index_ls_cached_s", time.perf_counter() - start)
    meter = IndexBytes()
    seconds, sent = [], []
    for i in range(args.puts):
        path = files / f"small{i}.bin"
        path.write_bytes(os.urandom(SMALL))
        async with consumer(rpc_url, dep, key) as client:
            before = meter.sent
            start = time.perf_counter()
            await client.put(path, days=DAYS)
            await client.flush()
            seconds.append(time.perf_counter() - start)
            sent.append(meter.sent - before)
    emit("put_small_file_s", statistics.median(seconds))
    emit("put_index_bytes", int(statistics.median(sent)))


async def run(args: argparse.Namespace, work: Path) -> None:
    state, files = work / "devnet", work / "files"
    files.mkdir()
    async with network(state, NODES, epoch=EPOCH) as (rpc_url, _):
        await measure(args, state, files, rpc_url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=30_000, help="entries in the index")
    parser.add_argument("--puts", type=int, default=5, help="small puts timed")
    parser.add_argument("--dir", default=None, help="parent of the run's temp directory")
    args = parser.parse_args()
    if args.files < 0 or args.puts < 1:
        sys.exit("--files must be >= 0 and --puts >= 1")
    with tempfile.TemporaryDirectory(prefix="nuclux-bench-index-", dir=args.dir) as tmp:
        asyncio.run(run(args, Path(tmp)))


if __name__ == "__main__":
    main()
