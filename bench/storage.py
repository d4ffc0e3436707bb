"""The storage figures of a multi-process network in one run, as ``name=value`` lines.

    .venv/bin/python -m bench.storage [--mib 256] [--rss-mib 1024] [--small 1000]
                                      [--hung-mib 64] [--dir DIR] [--no-gas]

The network: a devnet (anvil, contracts deployed, 10 s epochs) in a temp state directory and
8 provider nodes as separate ``nuclux node run`` processes on loopback
(``nuclux.node.localnet.start_nodes``). This process is the consumer: a ``StorageClient`` of
devnet account 1, with the SDK's default settings but posted-price leases (no auction
before the first put) and ``k=4, n=8``. MB = 10^6 bytes.

* ``tls_ceiling_MBps``: the raw TLS ceiling of the upload, measured in the same run. Eight
  bare TLS sinks (``bench._tls_sink``: separate processes, the node's ``server_ssl_context``
  and loop, no HTTP, hashing or disk) take one pinned TLS stream each from this process, all
  eight in parallel; each stream carries the share traffic one provider gets in the upload
  (``--mib`` * n/k / 8 bytes) in 1 MiB writes. The figure is payload bytes on the wire per
  second, the mean of a run before the upload and one after the download.
  ``tls_ceiling_file_MBps`` is the same times k/n: the file rate that ceiling allows an
  RS(4,8) upload. ``tls_ceiling_read_MBps``: the reverse direction, eight sinks sending
  ``--mib`` / 8 bytes each (the download's traffic), payload bytes per second.
* ``upload_pipeline_MBps``: the upload's ceiling without its protocol, measured in the same
  run just after the TLS ceilings (``bench._pipeline``): the same file sealed, coded RS(4,8)
  and hashed as the SDK's encoder does, sent over eight pinned TLS streams to eight receiver
  processes that store each block as a node's store does (temp file, Merkle root, fsync,
  rename, directory fsync, a SQLite commit in WAL mode with ``synchronous=FULL``); no HTTP,
  signing, leases or chain. ``upload_vs_pipeline`` is ``upload_MBps`` over it.
* ``upload_MBps`` / ``download_MBps``: ``put`` (with the ``flush`` after it) then ``get`` of a
  ``--mib`` MiB random file, file bytes per second. The download is checked against the file
  (SHA-256, after the clock stops). Before it, an untimed put of 1 MiB opens the account's 8
  storage leases (``first_put_opening_leases_s``: lease opening and acceptance on chain), so
  the figures are data movement on leases that exist, as for every put but an account's
  first.
* ``peak_rss_1GiB_MB``: a child process (``--child-put``) builds its own client (devnet
  account 2, no leases yet: this put opens them) and puts a ``--rss-mib`` MiB file with
  RS(4,8); it reports its own peak RSS (``VmHWM`` of ``/proc/self/status``) over the whole
  run, interpreter and imports included (``rss_before_put_MB`` is that peak just before the
  upload starts, imports done).
* ``download_4_hung_extra_s``: a ``--hung-mib`` MiB file is stored first; its download is
  timed with all nodes serving, then with 4 of the 8 node processes stopped by SIGSTOP (their
  sockets accept, nothing answers); the figure is the difference. SIGCONT follows always.
* ``download_4_killed_s``: the last step: 4 node processes are killed (SIGKILL) and the same
  file's download is timed (the client has not seen those nodes fail before: a fresh client).
* ``small_files_per_s``: ``--small`` files of 4 KiB put one after another, the final
  ``flush`` included, files per second.
* ``*_client_cpu_ms_per_MiB`` / ``*_nodes_cpu_ms_per_MiB`` (upload, download) and
  ``small_files_*_cpu_ms_each``: CPU time of this process and of the 8 node processes
  together during that step, per MiB of file or per small file (``/proc/<pid>/stat``):
  with 9 processes on 2 cores, where the time goes.
* ``idle_nodes_cpu_ms_per_s``: CPU the 8 node processes use together, per second, over
  ``IDLE_S`` seconds with nothing to serve (chain polling, agents), just before the upload and
  ``IDLE_S`` seconds after the first put (so its new leases are settled): a
  step that takes T seconds counts about T times that in its ``nodes_cpu`` figure.
* ``gas_proof``: gas of one storage proof (a lease of 256 shares of 1 MiB) from
  ``bench.gas`` on the embedded EVM (about 10 s); ``--no-gas`` skips it.

``NUCLUX_BENCH_BLOCK_BYTES`` and ``NUCLUX_BENCH_IN_FLIGHT`` in the environment set the SDK's
``block_bytes`` and ``segments_in_flight`` (here and in the child) to try other settings;
``NUCLUX_BENCH_STREAMS=0`` sends every block as its own HTTP request (no block streams).

The consumer tunes glibc's allocator as the ``nuclux`` CLI does (``nuclux.allocator``: bulk
buffers reuse heap memory instead of fresh pages), so the figures are those a CLI user gets.

Everything started here (anvil, the nodes, the sinks, the child) is stopped by PID in
``finally`` blocks, each bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from bench import _pipeline as pipeline
from bench._cpu import cpu_seconds
from bench._tls_sink import Sink, sink_processes
from nuclux.allocator import tune_allocator
from nuclux.chain import ChainConnection, Deployment, DeployParams, Ledger
from nuclux.chain.devnet import dev_account, devnet_down, devnet_up
from nuclux.gctune import freeze_startup, tune_gc
from nuclux.keys.derive import from_private_key, parse_private_key_hex
from nuclux.net.tls import client_ssl_context
from nuclux.node.localnet import LocalNode, start_nodes, stop_nodes
from nuclux.sdk import StorageClient, StorageSettings

MiB = 1 << 20
CHUNK = MiB
NODES = 8
K, N = 4, 8
EPOCH = 10
DAYS = 1.0
SMALL_BYTES = 4096
GOALS = {
    "upload_MBps": (180.0, ">="),
    "download_MBps": (400.0, ">="),
    "peak_rss_1GiB_MB": (200.0, "<="),
    "download_4_hung_extra_s": (2.0, "<"),
    "small_files_per_s": (200.0, ">="),
    "gas_proof": (60_000.0, "<="),
}
STEP_TIMEOUT = 1800.0  # one upload or download on a loaded machine
IDLE_S = 3.0  # the idle nodes measured for this long


def emit(name: str, value: float | int | str) -> None:
    text = f"{value:.2f}" if isinstance(value, float) else str(value)
    print(f"{name}={text}", flush=True)


def random_file(path: Path, size: int) -> str:
    """Write ``size`` random bytes; their SHA-256 hex."""
    h = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            data = os.urandom(min(left, CHUNK))
            h.update(data)
            f.write(data)
            left -= len(data)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while data := f.read(CHUNK):
            h.update(data)
    return h.hexdigest()


def bench_settings() -> StorageSettings:
    """The SDK's defaults with posted prices, and the environment's overrides (this process
    and the child alike)."""
    base = StorageSettings(use_market=False)
    block = int(os.environ.get("NUCLUX_BENCH_BLOCK_BYTES") or base.block_bytes)
    flight = int(os.environ.get("NUCLUX_BENCH_IN_FLIGHT") or base.segments_in_flight)
    streams = os.environ.get("NUCLUX_BENCH_STREAMS", "1") != "0"
    return dataclasses.replace(
        base, block_bytes=block, segments_in_flight=flight, block_streams=streams
    )


@contextlib.asynccontextmanager
async def consumer(
    rpc_url: str, deployment: Path, key: str, settings: StorageSettings | None = None
) -> AsyncIterator[StorageClient]:
    keys = from_private_key(parse_private_key_hex(key))
    acct: LocalAccount = Account.from_key(keys.eth_private_key)
    # posted-price leases: the figures are data movement, not an auction's windows (the
    # market's own figures are bench/market.py's)
    chosen = settings or bench_settings()
    async with await ChainConnection.open(rpc_url, tx_timeout=120) as conn:
        client = StorageClient(Ledger(conn, Deployment.load(deployment), acct), keys, chosen)
        try:
            yield client
        finally:
            await client.close()


# ---------------------------------------------------------------------- TLS ceiling


async def _stream(sink: Sink, op: bytes, nbytes: int) -> None:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", sink.port, ssl=client_ssl_context(sink.fingerprint), limit=CHUNK
    )
    try:
        payload = memoryview(os.urandom(CHUNK))
        writer.write(op + nbytes.to_bytes(8, "big"))
        left = nbytes
        if op == b"w":
            while left:
                k = min(left, CHUNK)
                writer.write(payload[:k])
                await writer.drain()
                left -= k
            if await reader.readexactly(1) != b"k":
                raise RuntimeError("the TLS sink did not acknowledge")
        else:
            while left:
                data = await reader.read(min(left, CHUNK))
                if not data:
                    raise RuntimeError("the TLS source closed early")
                left -= len(data)
        writer.write(b"q" + bytes(8))
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


async def ceiling(sinks: list[Sink], op: bytes, per_stream: int) -> float:
    """MB/s of payload over all streams in parallel (handshakes inside the clock: one each,
    as the SDK's connections to eight providers)."""
    start = time.perf_counter()
    await asyncio.gather(*(_stream(s, op, per_stream) for s in sinks))
    return per_stream * len(sinks) / (time.perf_counter() - start) / 1e6


# ---------------------------------------------------------------------- the child's upload


def vm_hwm_kib() -> int:
    """This process's peak RSS in KiB (``VmHWM``: of this program only; ``ru_maxrss`` would
    carry the parent's resident set over the fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


async def _child_put(path: Path, rpc_url: str, deployment: Path, key: str) -> None:
    before = vm_hwm_kib()
    async with consumer(rpc_url, deployment, key) as client:
        start = time.perf_counter()
        ref = await client.put(path, k=K, n=N, days=DAYS)
        await client.flush()
        seconds = time.perf_counter() - start
    peak = vm_hwm_kib()
    out = {"reference": str(ref), "seconds": seconds, "before_kib": before, "peak_kib": peak}
    print(json.dumps(out), flush=True)


async def child_upload(
    path: Path, rpc_url: str, deployment: Path, key: str
) -> dict[str, float | str]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.storage",
        "--child-put",
        str(path),
        "--rpc",
        rpc_url,
        "--deployment",
        str(deployment),
        "--key-env",
        "NUCLUX_BENCH_KEY",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "NUCLUX_BENCH_KEY": key},
    )
    try:
        out, _ = await asyncio.wait_for(child.communicate(), STEP_TIMEOUT)
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()
    if child.returncode != 0:
        raise RuntimeError(f"the 1 GiB upload child failed (exit {child.returncode})")
    result: dict[str, float | str] = json.loads(out.decode().strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------------- CPU accounting


class CpuMeter:
    """CPU seconds used by this process (the consumer) and by the node processes since the
    last reading, per MiB of file: where an operation's time goes on a machine where 9
    processes share 2 cores."""

    def __init__(self, node_pids: list[int]) -> None:
        self.pids = node_pids
        self.last = self.read()

    def read(self) -> tuple[float, float]:
        me = os.times()
        nodes = 0.0
        for pid in self.node_pids():
            with contextlib.suppress(OSError):  # a node killed by the run
                nodes += cpu_seconds(pid)
        return me.user + me.system, nodes

    def node_pids(self) -> list[int]:
        return self.pids

    def emit(self, what: str, nbytes: int) -> None:
        now = self.read()
        mib = nbytes / MiB
        emit(f"{what}_client_cpu_ms_per_MiB", (now[0] - self.last[0]) * 1000 / mib)
        emit(f"{what}_nodes_cpu_ms_per_MiB", (now[1] - self.last[1]) * 1000 / mib)
        self.last = now


# ---------------------------------------------------------------------- the run


async def timed_get(client: StorageClient, ref: str, out: Path) -> float:
    clear(out)
    start = time.perf_counter()
    await asyncio.wait_for(client.get(ref, out), STEP_TIMEOUT)
    return time.perf_counter() - start


def clear(path: Path) -> None:
    path.unlink(missing_ok=True)


def reap(nodes: list[LocalNode]) -> None:
    for node in nodes:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(node.pid, 0)


def signal_nodes(nodes: list[LocalNode], sig: signal.Signals) -> None:
    for node in nodes:
        with contextlib.suppress(ProcessLookupError):
            os.kill(node.pid, sig)


async def run(args: argparse.Namespace, work: Path) -> dict[str, float | int]:
    figures: dict[str, float | int] = {}
    state = work / "devnet"
    files = work / "files"
    files.mkdir()
    info = await devnet_up(state, params=DeployParams(epoch_length=EPOCH), funded=2)
    try:
        nodes: list[LocalNode] = []
        try:
            nodes = await start_nodes(state, NODES)  # each recorded as soon as it starts
            await measure(args, figures, info.rpc_url, state, files, nodes)
        finally:
            signal_nodes(nodes, signal.SIGCONT)  # whatever happened, none stays stopped
            await asyncio.wait_for(stop_nodes(state), 90)  # every recorded node, by PID
    finally:
        await asyncio.wait_for(devnet_down(state), 60)
    return figures


async def measure(
    args: argparse.Namespace,
    figures: dict[str, float | int],
    rpc_url: str,
    state: Path,
    files: Path,
    nodes: list[LocalNode],
) -> None:
    dep = state / "deployment.json"
    key1 = "0x" + bytes(dev_account(1).key).hex()
    key2 = "0x" + bytes(dev_account(2).key).hex()
    size = args.mib * MiB
    big, back = files / "big.bin", files / "big.out"
    big_sha = random_file(big, size)
    hung, hung_out = files / "hung.bin", files / "hung.out"
    hung_sha = random_file(hung, args.hung_mib * MiB)
    warm = files / "warm.bin"
    random_file(warm, MiB)

    async with sink_processes(NODES) as sinks:
        up_share = size * N // K // NODES
        ceilings = [await ceiling(sinks, b"w", up_share)]
        async with consumer(rpc_url, dep, key1) as client:
            # untimed: the account's first put opens its 8 leases (reserving 1 GiB each)
            start = time.perf_counter()
            await asyncio.wait_for(client.put(warm, k=K, n=N, days=DAYS), STEP_TIMEOUT)
            await client.flush()
            emit("first_put_opening_leases_s", time.perf_counter() - start)
            await asyncio.sleep(IDLE_S)  # the nodes settle the new leases (events, acceptance)
            cpu = CpuMeter([n.pid for n in nodes])
            await asyncio.sleep(IDLE_S)  # what the nodes cost with nothing to serve
            emit("idle_nodes_cpu_ms_per_s", (cpu.read()[1] - cpu.last[1]) * 1000 / IDLE_S)
            cpu = CpuMeter([n.pid for n in nodes])
            start = time.perf_counter()
            ref = await asyncio.wait_for(client.put(big, k=K, n=N, days=DAYS), STEP_TIMEOUT)
            await client.flush()
            figures["upload_MBps"] = size / (time.perf_counter() - start) / 1e6
            emit("upload_MBps", figures["upload_MBps"])
            cpu.emit("upload", size)
            seconds = await timed_get(client, str(ref), back)
            figures["download_MBps"] = size / seconds / 1e6
            emit("download_MBps", figures["download_MBps"])
            cpu.emit("download", size)
            if file_sha256(back) != big_sha:
                raise RuntimeError("the download differs from the file")
            back.unlink()
            ceilings.append(await ceiling(sinks, b"w", up_share))
            read_ceiling = await ceiling(sinks, b"r", size // NODES)
            figures["tls_ceiling_MBps"] = statistics.mean(ceilings)
            emit("tls_ceiling_MBps", figures["tls_ceiling_MBps"])
            emit("tls_ceiling_file_MBps", figures["tls_ceiling_MBps"] * K / N)
            emit("tls_ceiling_read_MBps", read_ceiling)
            # the same file through the upload's work per byte with no protocol (a thread, as
            # the pipeline is blocking; its receivers are stopped before it returns)
            pipe = await asyncio.to_thread(pipeline.measure, big, size, files)
            emit("upload_pipeline_MBps", pipe.mbps)
            emit("upload_pipeline_client_cpu_ms_per_MiB", pipe.client_cpu_ms_per_mib)
            emit("upload_pipeline_receivers_cpu_ms_per_MiB", pipe.receivers_cpu_ms_per_mib)
            emit("upload_vs_pipeline", figures["upload_MBps"] / pipe.mbps)

            hung_ref = str(await client.put(hung, k=K, n=N, days=DAYS))
            await client.flush()

            small_dir = files / "small"
            small_dir.mkdir()
            paths = []
            for i in range(args.small):
                p = small_dir / f"s{i}.bin"
                p.write_bytes(os.urandom(SMALL_BYTES))
                paths.append(p)
            cpu = CpuMeter([n.pid for n in nodes])
            start = time.perf_counter()
            for p in paths:
                await client.put(p, days=DAYS)
            await client.flush()
            figures["small_files_per_s"] = args.small / (time.perf_counter() - start)
            emit("small_files_per_s", figures["small_files_per_s"])
            now = cpu.read()
            emit("small_files_client_cpu_ms_each", (now[0] - cpu.last[0]) * 1000 / args.small)
            emit("small_files_nodes_cpu_ms_each", (now[1] - cpu.last[1]) * 1000 / args.small)

    rss = await child_upload(files_big(files, args.rss_mib), rpc_url, dep, key2)
    figures["peak_rss_1GiB_MB"] = float(rss["peak_kib"]) * 1024 / 1e6
    emit("peak_rss_1GiB_MB", figures["peak_rss_1GiB_MB"])
    emit("rss_before_put_MB", float(rss["before_kib"]) * 1024 / 1e6)
    emit("upload_1GiB_MBps", args.rss_mib * MiB / float(rss["seconds"]) / 1e6)

    victims = nodes[:4]
    async with consumer(rpc_url, dep, key1) as client:
        base = await timed_get(client, hung_ref, hung_out)
        emit("download_hung_file_s", base)
        signal_nodes(victims, signal.SIGSTOP)
        try:
            stalled = await timed_get(client, hung_ref, hung_out)
        finally:
            signal_nodes(victims, signal.SIGCONT)
        if file_sha256(hung_out) != hung_sha:
            raise RuntimeError("the download with 4 hung nodes differs from the file")
        figures["download_4_hung_extra_s"] = stalled - base
        emit("download_4_hung_extra_s", figures["download_4_hung_extra_s"])

    # last: four nodes killed, a fresh client reads the file
    signal_nodes(victims, signal.SIGKILL)
    reap(victims)  # killed children of this process: collect them at once
    async with consumer(rpc_url, dep, key1) as client:
        figures["download_4_killed_s"] = await timed_get(client, hung_ref, hung_out)
        if file_sha256(hung_out) != hung_sha:
            raise RuntimeError("the download with 4 killed nodes differs from the file")
        emit("download_4_killed_s", figures["download_4_killed_s"])


def files_big(files: Path, mib: int) -> Path:
    path = files / "rss.bin"
    random_file(path, mib * MiB)
    return path


def gas_proof() -> int:
    from bench import gas

    return int(asyncio.run(gas.main())["gas_proof"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="size of the timed file")
    parser.add_argument("--rss-mib", type=int, default=1024, help="size of the RSS upload")
    parser.add_argument("--small", type=int, default=1000, help="number of 4 KiB files")
    parser.add_argument("--hung-mib", type=int, default=64, help="file read with nodes down")
    parser.add_argument("--dir", default=None, help="parent of the run's temp directory")
    parser.add_argument("--no-gas", action="store_true", help="skip the gas_proof figure")
    parser.add_argument("--child-put", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rpc", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--deployment", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--key-env", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    tune_allocator()  # as the `nuclux` CLI does: bulk buffers reuse heap memory
    tune_gc()  # and as it does, the collector leaves what start-up built alone
    freeze_startup(collect=False)
    if args.child_put is not None:
        key = os.environ[args.key_env]
        asyncio.run(_child_put(Path(args.child_put), args.rpc, Path(args.deployment), key))
        return

    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop what was started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    emit("load_avg_1min", os.getloadavg()[0])
    with tempfile.TemporaryDirectory(prefix="nuclux-bench-storage-", dir=args.dir) as tmp:
        figures = asyncio.run(run(args, Path(tmp)))
    if not args.no_gas:
        figures["gas_proof"] = gas_proof()
        emit("gas_proof", figures["gas_proof"])
    emit("load_avg_1min_after", os.getloadavg()[0])
    for name, (goal, how) in GOALS.items():
        if name not in figures:
            continue
        value = figures[name]
        met = value >= goal if how == ">=" else value <= goal if how == "<=" else value < goal
        emit(f"{name}_goal", f"{how}{goal:g}")
        emit(f"{name}_met", "true" if met else "false")


if __name__ == "__main__":
    main()
