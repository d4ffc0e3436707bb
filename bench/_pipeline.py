"""The upload's work per byte without its protocol: a ceiling for ``bench.storage``.

    .venv/bin/python -m bench._pipeline [--mib 256]

This process reads a random file in segments and, on one thread as the SDK's encoder does,
seals each segment (``SegmentCipher``), codes it RS(4,8) (``core.erasure``) and computes each
block's Merkle root. Eight sender threads send block ``i`` of every segment over pinned TLS
1.3 stream ``i`` (blocking sockets: an 8-byte length, then the block), two blocks in flight
per stream and three segments in flight, as the SDK. Eight receiver processes (uvloop, the
node's ``server_ssl_context``) take each block into a buffer and, in a worker thread, do
what a node's store does with a block: write a temp file, compute the block's Merkle root,
fsync, drop the pages, rename into a blob directory, fsync that directory and commit a row
to a SQLite index (WAL, ``synchronous=FULL``); then they answer with the root, which the
sender checks.

Left out: HTTP, request signing and its check, leases and quotas, the node's event-loop
hand-offs between its threads, chain polling. So ``upload_pipeline_MBps`` (file bytes per
second) is what this machine allows an upload with the SDK's cryptography, coding, hashing and
durability and no protocol at all. Everything started is stopped by PID before returning.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import socket
import sqlite3
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from eth_account import Account

from bench._cpu import cpu_seconds
from nuclux.core.erasure import Layout, encode_segment
from nuclux.core.merkle import root_of_bytes
from nuclux.core.segment import SegmentCipher
from nuclux.net.tls import NodeIdentity, check_peer, client_ssl_context, server_ssl_context
from nuclux.node.store_index import fsync_dir
from nuclux.pagecache import drop_cached

MiB = 1 << 20
BLOCK = 2 * MiB
K, N = 4, 8
SEGMENTS_IN_FLIGHT = 3
PUTS_PER_STREAM = 2
HEADER = struct.Struct("<Q")
START_TIMEOUT = 60.0


# ---------------------------------------------------------------------- receiver


class _Store:
    """A node store's per-block work, nothing else."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "tmp").mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(root / "index.sqlite3", check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("CREATE TABLE IF NOT EXISTS blocks (root BLOB PRIMARY KEY, size INT)")
        self.lock = threading.Lock()

    def store(self, block: memoryview) -> bytes:
        fd, tmp = tempfile.mkstemp(dir=self.root / "tmp", prefix="w-")
        try:
            view = block
            while view:
                view = view[os.write(fd, view) :]
            root = root_of_bytes(block)
            os.fsync(fd)
            drop_cached(fd)
        finally:
            os.close(fd)
        blob_dir = self.root / root.hex()[:2]
        blob_dir.mkdir(exist_ok=True)
        os.replace(tmp, blob_dir / root.hex())
        fsync_dir(blob_dir)
        with self.lock, self.db:  # one transaction, committed (and the WAL fsynced) on exit
            self.db.execute("INSERT OR REPLACE INTO blocks VALUES (?, ?)", (root, len(block)))
        return root


class _Receiver(asyncio.BufferedProtocol):
    def __init__(self, store: _Store, pool: ThreadPoolExecutor) -> None:
        self.store, self.pool = store, pool
        self.header = bytearray(HEADER.size)
        self.buffers = [bytearray(BLOCK) for _ in range(PUTS_PER_STREAM)]
        self.turn = 0
        self.body: bytearray | None = None
        self.got, self.need = 0, HEADER.size
        self.transport: asyncio.Transport | None = None
        self.pending: deque[asyncio.Future[bytes]] = deque()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def get_buffer(self, sizehint: int) -> memoryview:
        target = self.header if self.body is None else self.body
        return memoryview(target)[self.got : self.need]

    def buffer_updated(self, nbytes: int) -> None:
        self.got += nbytes
        if self.got < self.need:
            return
        if self.body is None:
            (size,) = HEADER.unpack(self.header)
            if not 0 < size <= BLOCK:
                raise ValueError(f"a block is 1 to {BLOCK} bytes, not {size}")
            self.body, self.got, self.need = self.buffers[self.turn], 0, size
            return
        block = memoryview(self.body)[: self.need]
        self.turn = (self.turn + 1) % PUTS_PER_STREAM
        self.body, self.got, self.need = None, 0, HEADER.size
        # the other buffer takes the next block meanwhile (stored in parallel, as two PUTs
        # in flight are); answers go back in order, and the sender sends a third block only
        # once the first is answered
        done = asyncio.get_running_loop().run_in_executor(self.pool, self.store.store, block)
        self.pending.append(done)
        done.add_done_callback(self._answer)

    def _answer(self, _: asyncio.Future[bytes]) -> None:
        while self.pending and self.pending[0].done():
            root = self.pending.popleft().result()
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(root)


async def _serve(root: Path) -> None:
    identity = NodeIdentity.generate(Account.from_key(os.urandom(32)).address)
    store = _Store(root)
    with ThreadPoolExecutor(4) as pool:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _Receiver(store, pool), "127.0.0.1", 0, ssl=server_ssl_context(identity)
        )
        port = server.sockets[0].getsockname()[1]
        print(json.dumps({"port": port, "fingerprint": identity.fingerprint.hex()}), flush=True)
        try:
            await loop.run_in_executor(None, sys.stdin.buffer.read)
        finally:
            server.close()


# ---------------------------------------------------------------------- sender


@dataclass(frozen=True)
class PipelineFigures:
    mbps: float
    client_cpu_ms_per_mib: float
    receivers_cpu_ms_per_mib: float


def _recv_exact(sock: ssl.SSLSocket, view: memoryview) -> None:
    while view:
        n = sock.recv_into(view, len(view))
        if n == 0:
            raise ConnectionError("a pipeline receiver closed its stream")
        view = view[n:]


class _Sender:
    def __init__(self, path: Path, size: int, socks: list[ssl.SSLSocket]) -> None:
        self.path, self.size, self.socks = path, size, socks
        self.layout = Layout(K, N, BLOCK)
        self.cipher = SegmentCipher(os.urandom(32), os.urandom(32))
        self.count = self.layout.segment_count(size)
        self.window = threading.Semaphore(SEGMENTS_IN_FLIGHT)
        self.lanes: list[queue.Queue[tuple[int, memoryview, bytes] | None]] = [
            queue.Queue() for _ in range(N)
        ]
        self.left = [0] * self.count
        self.lock = threading.Lock()
        self.errors: list[BaseException] = []

    def run(self) -> None:
        threads = [threading.Thread(target=self._lane, args=(i,)) for i in range(N)]
        for t in threads:
            t.start()
        try:
            self._produce()
        finally:
            for q in self.lanes:
                q.put(None)
            for t in threads:
                t.join()
        if self.errors:
            raise self.errors[0]

    def _produce(self) -> None:
        fd = os.open(self.path, os.O_RDONLY)
        plain = bytearray(self.layout.segment_bytes)
        try:
            for j in range(self.count):
                while not self.window.acquire(timeout=1.0):
                    if self.errors:
                        return
                start, stop = self.layout.segment_span(self.size, j)
                view = memoryview(plain)[: stop - start]
                if os.preadv(fd, [view], start) != stop - start:
                    raise RuntimeError("the pipeline's file shrank")
                sealed = self.cipher.encrypt(j, view, last=j == self.count - 1)
                blocks = encode_segment(self.layout, sealed)
                self.left[j] = N
                for i, block in enumerate(blocks):
                    self.lanes[i].put((j, block, root_of_bytes(block)))
        finally:
            os.close(fd)

    def _lane(self, i: int) -> None:
        sock, answer = self.socks[i], bytearray(32)
        sent: list[tuple[int, bytes]] = []
        try:
            while (item := self.lanes[i].get()) is not None:
                j, block, root = item
                sock.sendall(HEADER.pack(len(block)))
                sock.sendall(block)
                sent.append((j, root))
                if len(sent) == PUTS_PER_STREAM:
                    self._settle(sock, answer, *sent.pop(0))
            for j, root in sent:
                self._settle(sock, answer, j, root)
        except BaseException as exc:
            self.errors.append(exc)
            for _ in range(SEGMENTS_IN_FLIGHT):
                self.window.release()  # let the producer see the error

    def _settle(self, sock: ssl.SSLSocket, answer: bytearray, j: int, root: bytes) -> None:
        _recv_exact(sock, memoryview(answer))
        if bytes(answer) != root:
            raise RuntimeError(f"a pipeline receiver stored block {j} with another root")
        with self.lock:
            self.left[j] -= 1
            done = self.left[j] == 0
        if done:
            self.window.release()


def _start_receivers(work: Path) -> list[tuple[subprocess.Popen[bytes], int, bytes]]:
    out: list[tuple[subprocess.Popen[bytes], int, bytes]] = []
    try:
        for i in range(N):
            child = subprocess.Popen(
                [sys.executable, "-m", "bench._pipeline", "--serve", str(work / f"r{i}")],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            out.append((child, 0, b""))
        for n, (child, _, _) in enumerate(out):
            assert child.stdout is not None
            line = child.stdout.readline()
            if not line:
                raise RuntimeError("a pipeline receiver exited before serving")
            info = json.loads(line)
            out[n] = (child, int(info["port"]), bytes.fromhex(info["fingerprint"]))
    except BaseException:
        _stop(out)
        raise
    return out


def _stop(children: list[tuple[subprocess.Popen[bytes], int, bytes]]) -> None:
    for child, _, _ in children:
        if child.stdin is not None:
            child.stdin.close()
    for child, _, _ in children:
        try:
            child.wait(10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()


def measure(path: Path, size: int, work: Path) -> PipelineFigures:
    """Send the file at ``path`` (``size`` bytes) through the pipeline; the receivers' stores
    live in a temporary directory under ``work``, removed before returning."""
    with tempfile.TemporaryDirectory(prefix="pipeline-", dir=work) as tmp:
        return _measure(path, size, Path(tmp))


def _measure(path: Path, size: int, work: Path) -> PipelineFigures:
    children = _start_receivers(work)
    socks: list[ssl.SSLSocket] = []
    try:
        for _, port, fingerprint in children:
            raw = socket.create_connection(("127.0.0.1", port), START_TIMEOUT)
            sock = client_ssl_context().wrap_socket(raw)
            socks.append(sock)
            check_peer(sock, fingerprint)  # the pin, as the SDK's connections check it
        pids = [child.pid for child, _, _ in children]
        me, them = cpu_seconds(os.getpid()), sum(map(cpu_seconds, pids))
        start = time.perf_counter()
        _Sender(path, size, socks).run()
        seconds = time.perf_counter() - start
        mib = size / MiB
        return PipelineFigures(
            size / seconds / 1e6,
            (cpu_seconds(os.getpid()) - me) * 1000 / mib,
            (sum(map(cpu_seconds, pids)) - them) * 1000 / mib,
        )
    finally:
        for sock in socks:
            sock.close()
        _stop(children)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=int, default=256, help="size of the file sent")
    p.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve is not None:
        import uvloop

        uvloop.run(_serve(Path(args.serve)))
        return
    with tempfile.TemporaryDirectory(prefix="nuclux-pipeline-") as tmp:
        work = Path(tmp)
        path = work / "file.bin"
        with path.open("wb") as f:
            for _ in range(args.mib):
                f.write(os.urandom(MiB))
        fig = measure(path, args.mib * MiB, work)
    print(f"upload_pipeline_MBps={fig.mbps:.2f}")
    print(f"upload_pipeline_client_cpu_ms_per_MiB={fig.client_cpu_ms_per_mib:.2f}")
    print(f"upload_pipeline_receivers_cpu_ms_per_MiB={fig.receivers_cpu_ms_per_mib:.2f}")


if __name__ == "__main__":
    main()
