"""Rebuilding lost shares of a spread file from any ``k`` healthy ones, segment by segment.

Theory of operation
-------------------
The download and upload machinery, joined: a ``Downloader`` over the healthy shares gives,
for each segment, ``k`` blocks each checked against its block root (the share's block-root
list having been checked once against the manifest's share root), hedging slow providers and
naming bad blocks as a download does. The segment is decoded to its sealed form and encoded
again: the code is deterministic, so the missing shares' blocks come out exactly as they were
first written. An ``Uploader`` whose lanes are only the missing shares stores them on their new
providers, in order, a lane whose provider fails getting a replacement (its blocks rebuilt
again from the network). Segments are produced one at a time inside the upload's window of
``segments_in_flight``, so memory is bounded by segments, never by the file.

A block from a source without block roots (an older node) is trusted only once the decoded
segment opens (AES-GCM). The caller checks that each rebuilt share's Merkle root equals the
manifest's before anything refers to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from nuclux.core.erasure import Layout, block_root, decode_segment, encode_segment, share_root
from nuclux.core.segment import SegmentCipher
from nuclux.errors import IntegrityError
from nuclux.sdk.download import BlockFault, Downloader, Source
from nuclux.sdk.leases import Placement
from nuclux.sdk.nodeapi import block_object_id
from nuclux.sdk.peers import PEER_ERRORS
from nuclux.sdk.settings import StorageSettings
from nuclux.sdk.upload import Replace, Replacement, Uploader


class _Reader(Downloader):
    """A downloader that hands out verified blocks instead of writing the file."""

    async def blocks(self, j: int) -> dict[int, bytes]:
        """``k`` verified blocks of segment ``j`` (share -> block)."""
        return await self._gather(j, {}, self.layout.k)


class _Rebuilder(Uploader):
    """An upload whose segments come from the network, with lanes for the missing shares."""

    def __init__(
        self, *, reader: _Reader, missing: set[int], cipher: SegmentCipher, **kwargs: Any
    ) -> None:
        super().__init__(path=os.devnull, cipher=cipher, **kwargs)  # the file is not read
        self.reader, self.missing, self.cipher = reader, missing, cipher
        self.lanes = [lane for lane in self.lanes if lane.share in missing]
        self.open_lanes = len(self.lanes)

    async def _prepare(self, index: int) -> tuple[list[bytes], list[bytes]]:
        blocks = await self.reader.blocks(index)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self._recode, index, blocks)

    def _recode(self, j: int, blocks: dict[int, bytes]) -> tuple[list[bytes], list[bytes]]:
        """The missing shares' blocks of segment ``j`` (others empty) and their roots."""
        layout = self.layout
        chosen = {i: blocks[i] for i in sorted(blocks)[: layout.k]}
        sealed = decode_segment(layout, chosen, layout.sealed_size(self.size, j))
        if any(self.reader.sources[i].roots is None for i in chosen):
            last = j == layout.segment_count(self.size) - 1
            self.cipher.decrypt(j, sealed, last=last)  # IntegrityError if a block was bad
        out: list[bytes] = []
        roots: list[bytes] = []
        for i, block in enumerate(encode_segment(layout, sealed)):
            data = bytes(block) if i in self.missing else b""
            out.append(data)
            roots.append(block_root(data) if i in self.missing else b"")
        return out, roots


@dataclass(frozen=True, slots=True)
class Rebuilt:
    """Where the rebuilt shares went, with their roots, and what went wrong on the way."""

    placements: dict[int, Placement]
    roots: dict[int, bytes]  # share -> share root of what was stored
    faults: tuple[BlockFault, ...]  # blocks of sources that failed (provider named)
    replacements: tuple[Replacement, ...]


async def rebuild_shares(
    *,
    layout: Layout,
    size: int,
    cipher: SegmentCipher,
    file_id: bytes,
    sources: list[Source],
    targets: dict[int, Placement],
    expected: dict[int, bytes],
    keep: list[Placement],
    replace: Replace,
    settings: StorageSettings,
    executor: Executor,
) -> Rebuilt:
    """Rebuild shares ``targets`` (share -> new placement) from the live ``sources``; each
    must hash to its ``expected`` root, else what was stored is deleted and
    ``IntegrityError`` raised (as for any failure: nothing rebuilt is left behind).

    ``keep`` is the current placement of every share (the targets' entries are replaced);
    sources of the shares being rebuilt must be marked dead by the caller."""
    reader = _Reader(
        layout=layout,
        size=size,
        cipher=cipher,
        file_id=file_id,
        sources=sources,
        fd=-1,
        settings=settings,
        executor=executor,
    )
    placements = [targets.get(i, p) for i, p in enumerate(keep)]
    uploader = _Rebuilder(
        reader=reader,
        missing=set(targets),
        cipher=cipher,
        size=size,
        layout=layout,
        file_id=file_id,
        placements=placements,
        replace=replace,
        settings=settings,
        executor=executor,
    )
    try:
        result = await uploader.run()
        roots = {i: share_root(result.block_roots[i]) for i in targets}
        check_roots(roots, expected)
    except Exception:
        await _discard(uploader, file_id, settings.request_timeout)
        raise
    finally:
        for src in sources:
            if src.roots_task is not None and not src.roots_task.done():
                src.roots_task.cancel()
    stored = {lane.share: lane.placement for lane in uploader.lanes}
    faults = (*reader.report.corrupt, *reader.report.unavailable)
    return Rebuilt(stored, roots, faults, tuple(result.replacements))


async def _discard(uploader: _Rebuilder, file_id: bytes, timeout: float) -> None:
    """A failed rebuild: delete the blocks it stored (no revision lists them), best effort."""

    async def lane_blocks(lane: Any) -> None:
        p = lane.placement
        for j in range(lane.stored):
            with contextlib.suppress(*PEER_ERRORS):
                oid = block_object_id(file_id, lane.share, j)
                await asyncio.wait_for(p.client.delete(p.lease_id, oid), timeout)

    await asyncio.gather(*(lane_blocks(lane) for lane in uploader.lanes))


def check_roots(roots: dict[int, bytes], expected: dict[int, bytes]) -> None:
    """``IntegrityError`` unless every rebuilt share hashes to its root in the manifest."""
    for i, root in roots.items():
        if root != expected[i]:
            raise IntegrityError(
                f"share {i} rebuilt to root {root.hex()[:16]}…, not the manifest's"
                f" {expected[i].hex()[:16]}…: the healthy shares do not agree with the manifest;"
                " nothing was published"
            )
