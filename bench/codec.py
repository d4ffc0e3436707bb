"""The storage data path's CPU cost on one core, beside its ceilings, as ``name=value`` lines.

    .venv/bin/python -m bench.codec [--mib 128] [--k 4] [--n 8] [--reps 3]

* ``sha256_ceiling_MBps``: one ``hashlib.sha256`` over a 64 MiB buffer (the hash's speed).
* ``merkle_MBps``: ``root_of_bytes`` of the same 64 MiB as one share (256-byte leaves: 28
  SHA-256 blocks per KiB, hashed two messages at a time with SHA-NI; ``docs/spec/shares.md``).
* ``aes_gcm_MBps``: ``SegmentCipher.encrypt_into`` of full segments into one reused buffer.
* ``rs_encode_MBps`` / ``rs_decode_MBps``: ``encode_segment`` / ``decode_segment`` of a full
  sealed segment, decoding from parity blocks only (the slowest case; from data blocks
  decoding is a copy). MB of sealed segment per second.
* ``pipeline_MBps``: file bytes per second through the upload's CPU work: seal every segment,
  encode it, hash every block of all ``n`` shares and the share roots.
* ``rs_encode_mallopt_MBps`` / ``pipeline_mallopt_MBps``: the same after telling glibc's
  malloc to keep freed memory (``mallopt``: no mmap below 64 MiB, no trim below 256 MiB). pyeclib
  allocates fresh fragment buffers on every call; by default they come from ``mmap`` and every
  page faults on first touch, which dominates ``rs_encode_MBps`` (``rs_encode_faults`` counts
  minor page faults per encode). This is a process-wide setting for the SDK's entry point to
  decide, not something the pure core can do.

Layout: ``default_layout(k, n)`` (RS(4,8): 1 MiB blocks, 4 MiB - 16 B segments). Each figure
is the median of ``--reps`` runs. MB = 10^6 bytes.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import os
import resource
import statistics
import time
from collections.abc import Callable

from nuclux.core.erasure import (
    Layout,
    block_root,
    decode_segment,
    default_layout,
    encode_segment,
    share_root,
)
from nuclux.core.merkle import root_of_bytes
from nuclux.core.segment import TAG_BYTES, SegmentCipher

MiB = 1 << 20
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def timed(fn: Callable[[], object], reps: int) -> float:
    """The median wall time of ``reps`` calls (after one warm-up call)."""
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def pipeline(layout: Layout, cipher: SegmentCipher, data: bytes) -> list[bytes]:
    """The upload's CPU work: the n share roots of ``data``."""
    view = memoryview(data)
    count = layout.segment_count(len(data))
    roots: list[list[bytes]] = [[] for _ in range(layout.n)]
    buf = bytearray(layout.segment_bytes + TAG_BYTES)
    for j in range(count):
        start, stop = layout.segment_span(len(data), j)
        sealed = memoryview(buf)[: stop - start + TAG_BYTES]
        cipher.encrypt_into(j, view[start:stop], sealed, last=j == count - 1)
        for i, block in enumerate(encode_segment(layout, sealed)):
            roots[i].append(block_root(block))
    return [share_root(r) for r in roots]


def mallopt_keep_memory() -> bool:
    try:
        libc = ctypes.CDLL(None)
        ok = libc.mallopt(_M_MMAP_THRESHOLD, 64 * MiB) and libc.mallopt(
            _M_TRIM_THRESHOLD, 256 * MiB
        )
    except (OSError, AttributeError):
        return False
    return bool(ok)


def faults_per_call(fn: Callable[[], object], calls: int = 20) -> float:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(calls):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / calls


def main(args: argparse.Namespace) -> dict[str, float]:
    layout = default_layout(args.k, args.n)
    cipher = SegmentCipher(os.urandom(32), os.urandom(32))
    share = os.urandom(64 * MiB)
    data = os.urandom(args.mib * MiB)
    seg = layout.segment_bytes
    plain = data[:seg]
    sealed = cipher.encrypt(0, plain, last=False)
    out = bytearray(seg + TAG_BYTES)
    blocks = encode_segment(layout, sealed)
    parity = {i: bytes(blocks[i]) for i in range(layout.n - layout.k, layout.n)}
    r: dict[str, float] = {}

    def mbps(size: int, fn: Callable[[], object]) -> float:
        return size / timed(fn, args.reps) / 1e6

    r["sha256_ceiling_MBps"] = mbps(len(share), lambda: hashlib.sha256(share).digest())
    r["merkle_MBps"] = mbps(len(share), lambda: root_of_bytes(share))
    r["aes_gcm_MBps"] = mbps(seg, lambda: cipher.encrypt_into(0, plain, out, last=False))

    def encode() -> object:
        return encode_segment(layout, sealed)

    assert decode_segment(layout, parity, len(sealed)) == sealed
    r["rs_encode_MBps"] = mbps(len(sealed), encode)
    r["rs_decode_MBps"] = mbps(len(sealed), lambda: decode_segment(layout, parity, len(sealed)))
    r["rs_encode_faults"] = faults_per_call(encode)
    r["pipeline_MBps"] = mbps(len(data), lambda: pipeline(layout, cipher, data))
    if mallopt_keep_memory():
        r["rs_encode_mallopt_MBps"] = mbps(len(sealed), encode)
        r["rs_encode_mallopt_faults"] = faults_per_call(encode)
        r["pipeline_mallopt_MBps"] = mbps(len(data), lambda: pipeline(layout, cipher, data))
    return r


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=int, default=128, help="file size for the pipeline, in MiB")
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--n", type=int, default=8)
    p.add_argument("--reps", type=int, default=3)
    results = main(p.parse_args())
    for name, value in results.items():
        print(f"{name}={value:.0f}")
