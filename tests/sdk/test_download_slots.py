"""Data shares' blocks are read straight into their segment's buffer and decrypted from it;
parity blocks, bad blocks and failed sources still take the other paths (fake providers)."""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import pytest

from nuclux.core.erasure import Layout, block_root, decode_segment, encode_segment, share_root
from nuclux.core.segment import SegmentCipher
from nuclux.net.answers import ShareRoots
from nuclux.net.client import BufferTooSmall, NodeClient
from nuclux.sdk import download
from nuclux.sdk.download import Downloader, Source
from nuclux.sdk.nodeapi import block_object_id
from nuclux.sdk.settings import StorageSettings

LAYOUT = Layout(4, 8, 4096)
SIZE = 3 * LAYOUT.segment_bytes + 5_000  # three full segments and a short last one
FILE_ID = bytes(range(16))
DATA_ID = bytes(range(32))
KEY = bytes(range(1, 33))


def encoded(data: bytes) -> list[list[bytes]]:
    """``blocks[share][segment]`` of ``data`` sealed and coded as an upload does."""
    cipher = SegmentCipher(KEY, DATA_ID)
    count = LAYOUT.segment_count(len(data))
    shares: list[list[bytes]] = [[] for _ in range(LAYOUT.n)]
    for j in range(count):
        start, stop = LAYOUT.segment_span(len(data), j)
        sealed = cipher.encrypt(j, data[start:stop], last=j == count - 1)
        for i, block in enumerate(encode_segment(LAYOUT, sealed)):
            shares[i].append(bytes(block))
    return shares


class FakeProvider:
    """One share's provider: serves its blocks, or fails the way it is told to."""

    def __init__(self, share: int, blocks: list[bytes], fault: str | None) -> None:
        self.share, self.blocks, self.fault = share, blocks, fault
        self.calls: Counter[str] = Counter()

    def _block(self, oid: bytes) -> bytes:
        if self.fault in ("dead", "gone"):
            raise ConnectionRefusedError("refused")
        j = int(oid.rsplit(b"/", 1)[1])
        assert oid == block_object_id(FILE_ID, self.share, j)
        block = self.blocks[j]
        if self.fault == "long":
            return block + b"x"
        if self.fault == "flipped":
            return bytes([block[0] ^ 1]) + block[1:]
        return block

    async def shares(self, lease_id: int, file_id: bytes, index: int, **_: Any) -> ShareRoots:
        if self.fault == "dead":
            raise ConnectionRefusedError("refused")
        roots = tuple(block_root(b) for b in self.blocks)
        return ShareRoots(len(roots), LAYOUT.block_bytes, 0, 0, share_root(roots), roots)

    async def get(self, lease_id: int, oid: bytes, **_: Any) -> bytes:
        self.calls["get"] += 1
        return self._block(oid)

    async def get_into(self, lease_id: int, oid: bytes, buffer: memoryview, **_: Any) -> int:
        self.calls["get_into"] += 1
        block = self._block(oid)
        if len(block) > len(buffer):
            raise BufferTooSmall("too long")
        buffer[: len(block)] = block
        return len(block)


async def fetch_all(
    tmp_path: Path, faults: dict[int, str], monkeypatch: pytest.MonkeyPatch
) -> tuple[bytes, bytes, Downloader, list[FakeProvider], int]:
    data = os.urandom(SIZE)
    shares = encoded(data)
    providers = [FakeProvider(i, shares[i], faults.get(i)) for i in range(LAYOUT.n)]
    roots = [share_root([block_root(b) for b in blocks]) for blocks in shares]
    sources = [
        Source(i, f"p{i}", i + 1, cast(NodeClient, p), roots[i]) for i, p in enumerate(providers)
    ]
    decodes = Counter[str]()

    def counting_decode(*args: Any) -> bytes:
        decodes["n"] += 1
        return decode_segment(*args)

    monkeypatch.setattr(download, "decode_segment", counting_decode)
    out = tmp_path / "out"
    fd = os.open(out, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        with ThreadPoolExecutor(1) as pool:
            d = Downloader(
                layout=LAYOUT,
                size=SIZE,
                cipher=SegmentCipher(KEY, DATA_ID),
                file_id=FILE_ID,
                sources=sources,
                fd=fd,
                settings=StorageSettings(),
                executor=pool,
            )
            await d.run()
    finally:
        os.close(fd)
    return data, out.read_bytes(), d, providers, decodes["n"]


async def test_data_blocks_are_read_into_the_segment_and_never_joined(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, got, d, providers, decodes = await fetch_all(tmp_path, {}, monkeypatch)
    assert got == data
    assert decodes == 0  # the segment buffer was the sealed segment every time
    assert all(p.calls == Counter(get_into=4) for p in providers[:4])
    assert not d.report.corrupt
    assert not d.report.unavailable
    # one buffer per segment in flight at most, sized for the first (largest) blocks
    assert 1 <= len(d._slots) <= LAYOUT.segment_count(SIZE)
    assert all(len(s) == LAYOUT.k * LAYOUT.block_bytes for s in d._slots)


@pytest.mark.parametrize("fault", ["dead", "gone"])
async def test_a_failed_data_share_is_replaced_by_parity_and_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """``dead``: fails its roots request too (never asked for a block); ``gone``: answers
    that, then fails its first block request (dropped)."""
    data, got, d, providers, decodes = await fetch_all(tmp_path, {1: fault}, monkeypatch)
    assert got == data
    assert decodes == LAYOUT.segment_count(SIZE)  # blocks 0, 2, 3 in place, one parity
    assert sum(p.calls["get"] for p in providers[4:]) == LAYOUT.segment_count(SIZE)
    if fault == "dead":
        assert not providers[1].calls
    else:
        assert providers[1].calls["get_into"] >= 1
        # dropped (segments already in flight had asked it too)
        assert {(f.share, f.segment) for f in d.report.unavailable} == {(1, None)}


@pytest.mark.parametrize("fault", ["long", "flipped"])
async def test_a_bad_data_block_read_in_place_is_caught_and_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    data, got, d, _providers, _ = await fetch_all(tmp_path, {2: fault}, monkeypatch)
    assert got == data
    assert {f.share for f in d.report.corrupt} == {2}
    assert len(d.report.corrupt) == LAYOUT.segment_count(SIZE)
    reason = "longer than" if fault == "long" else "does not match its Merkle root"
    assert all(reason in f.reason for f in d.report.corrupt)
