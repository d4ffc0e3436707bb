"""The spread download: k fastest providers, hedged, every block verified, written atomically.

Theory of operation
-------------------
Each share is a *source* (its provider, lease and, for a grantee, the read capability). Before
its first block is used, a source's block-root list is fetched and checked once against the
share root in the owner-signed manifest (``shares.md`` §4); then every block it serves is
hashed and compared with its root. Every source is asked for its roots at once when the
download starts, and the first block requests wait until ``k`` have answered (at most
``hedge_delay``): those are the ``k`` fastest providers, and a hung one is never among the first
asked. Up to ``segments_in_flight`` segments are read at once; for each, ``k`` sources are asked
for their block, ranked: answering sources before ones still silent, then data shares whose
latency is within twice the fastest source's (plus ``DATA_SHARE_SLACK``: decoding from data
blocks is a copy, from parity a Reed-Solomon decode that holds the GIL), then by observed
latency. A request not
answered within ``hedge_delay`` marks its source slow (asked last from then on) and the same
block is asked of the next source; a failed source (unreachable, refusing, timed out) is
dropped; a block that fails its check is recorded with the provider's name and replaced by
another share's block.

When a client cannot fetch block roots (``nodeapi`` adapter), blocks are still checked by the
node-reported SHA-256 and, after decoding, by the AES-GCM tag; if the tag fails, more blocks
are fetched and k-subsets are tried until one opens, and the segment is encoded again to name
the providers whose blocks differ.

Each segment being read has a buffer of ``k`` full blocks (reused from segment to segment):
data share ``i``'s block is read straight into its place ``i * P`` (``NodeClient.get_into``),
so when the ``k`` blocks used are the data shares (the usual case) the buffer *is* the sealed
segment, verified block by block and decrypted from where it arrived, with no joining copy.
Parity blocks (and every block of a ``_Reader``, which hands blocks out) are read as ``bytes``.

Decoded, opened segments are written with ``pwrite`` at their offsets into a temporary file
the caller renames into place once everything is written and synced. Behind the last 64 MiB
written, the output's pages are written back and dropped from the page cache as the download
goes (``pagecache.Dropper``): a long download does not fill the cache with a file written once.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from concurrent.futures import Executor
from typing import cast

from nuclux.core.erasure import (
    Layout,
    decode_segment,
    encode_segment,
    verify_block,
    verify_block_roots,
)
from nuclux.core.segment import TAG_BYTES, SegmentCipher
from nuclux.errors import IntegrityError, NucluxError, ObjectNotFound
from nuclux.net.client import BufferTooSmall
from nuclux.pagecache import Dropper
from nuclux.sdk.nodeapi import block_object_id, share_roots
from nuclux.sdk.peers import PEER_ERRORS
from nuclux.sdk.settings import NotEnoughProviders, Progress, StorageSettings, first_error
from nuclux.sdk.sources import BlockFault, DownloadReport, Source, silence

__all__ = ["BlockFault", "DownloadReport", "Downloader", "Source"]

DROP_KEEP = 64 << 20
Block = bytes | memoryview  # a block as read: bytes, or a view of its segment's buffer
DATA_SHARE_SLACK = 0.05  # seconds: a data share this much (plus 2x) slower is still preferred


class Downloader:
    def __init__(
        self,
        *,
        layout: Layout,
        size: int,
        cipher: SegmentCipher,
        file_id: bytes,
        sources: list[Source],
        fd: int,
        settings: StorageSettings,
        executor: Executor,
        progress: Progress | None = None,
    ) -> None:
        self.layout, self.size, self.cipher, self.file_id = layout, size, cipher, file_id
        self.sources, self.fd = sources, fd
        self.settings, self.executor, self.progress = settings, executor, progress
        self.count = layout.segment_count(size)
        self.report = DownloadReport()
        self._buffer = bytearray(layout.segment_bytes)
        self._lock = threading.Lock()
        # a long output leaves the page cache behind it (pagecache.Dropper): the last
        # DROP_KEEP bytes stay cached
        self._dropper = Dropper(fd, DROP_KEEP)
        self._done = 0
        self._slots: list[bytearray] = []  # free segment buffers (k blocks each)
        self._block0 = layout.block_size(size, 0)

    async def run(self) -> DownloadReport:
        # a segment being read holds k blocks, not the n of an upload: more fit the same memory
        w = self.settings.segments_in_flight * self.layout.n // self.layout.k
        window = asyncio.Semaphore(max(1, min(16, w)))

        async def one(j: int) -> None:
            try:
                await self._segment(j)
            finally:
                window.release()

        try:
            await self._race_roots()
            async with asyncio.TaskGroup() as tg:
                for j in range(self.count):
                    await window.acquire()
                    tg.create_task(one(j))
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        finally:
            for src in self.sources:
                if src.roots_task is not None and not src.roots_task.done():
                    src.roots_task.cancel()
        return self.report

    # ------------------------------------------------------------------ one segment

    async def _segment(self, j: int) -> None:
        k = self.layout.k
        # the first segment's blocks are the largest (full ones, or the only segment's)
        slot = self._slots.pop() if self._slots else bytearray(k * self._block0)
        try:
            blocks = await self._gather_into(j, {}, k, slot=slot)
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(self.executor, self._finish, j, blocks, None, slot)
            except IntegrityError:
                if all(self.sources[i].roots is not None for i in blocks):
                    raise  # verified blocks that do not open: the manifest itself is wrong
                await self._recover(j, blocks, slot)
        finally:  # every request into the slot has ended (_gather cancels and awaits them)
            self._slots.append(slot)
        start, stop = self.layout.segment_span(self.size, j)
        self._done += stop - start
        if self.progress is not None:
            self.progress(self._done, self.size)

    def _ranked(self) -> list[Source]:
        live = [s for s in self.sources if s.dead is None]
        # data shares first unless clearly slower than the fastest source: from data blocks a
        # segment is a concatenation, from any parity block it is a Reed-Solomon decode that
        # holds the GIL for the whole segment and stalls the event loop meanwhile
        known = [s.latency for s in live if s.latency > 0 and not s.slow]
        near = 2 * min(known) + DATA_SHARE_SLACK if known else 0.0
        k = self.layout.k
        return sorted(
            live,
            key=lambda s: (
                s.slow,
                silence(s),
                not (s.share < k and s.latency <= near),
                s.latency,
                s.share,
            ),
        )

    async def _race_roots(self) -> None:
        """Ask every live source for its block roots at once; return when ``k`` have answered
        or ``hedge_delay`` has passed, whichever is first."""
        pending: set[asyncio.Task[tuple[bytes, ...] | None]] = set()
        for src in self.sources:
            if src.dead is None:
                pending.add(self._roots_task(src))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.hedge_delay
        answered = 0
        while pending and answered < self.layout.k:
            done, pending = await asyncio.wait(
                pending, timeout=deadline - loop.time(), return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                return
            answered += sum(1 for t in done if not t.cancelled() and t.exception() is None)

    async def _gather(
        self, j: int, have: dict[int, bytes], want: int, *, best_effort: bool = False
    ) -> dict[int, bytes]:
        """``want`` blocks of segment ``j`` (including ``have``), each its own ``bytes``."""
        got = await self._gather_into(j, dict(have), want, best_effort=best_effort)
        return cast(dict[int, bytes], got)  # without a slot, _fetch returns bytes

    async def _gather_into(
        self,
        j: int,
        have: dict[int, Block],
        want: int,
        *,
        best_effort: bool = False,
        slot: bytearray | None = None,
    ) -> dict[int, Block]:
        """``want`` blocks of segment ``j`` (including ``have``), hedging slow sources;
        with ``best_effort``, as many as can be read. With ``slot``, data shares' blocks are
        read into it (``_fetch``)."""
        loop = asyncio.get_running_loop()
        got = dict(have)
        tried = set(got)
        running: dict[asyncio.Task[Block], tuple[Source, float]] = {}
        hedged: set[asyncio.Task[Block]] = set()  # overdue requests already hedged

        def start_next() -> bool:
            for src in self._ranked():
                if src.share not in tried:
                    tried.add(src.share)
                    task = asyncio.create_task(self._fetch(src, j, slot))
                    running[task] = (src, loop.time())
                    return True
            return False

        for _ in range(want - len(got)):
            start_next()
        try:
            while len(got) < want:
                if not running:
                    if best_effort:
                        break
                    raise self._short(j, len(got), want)
                done, _ = await asyncio.wait(
                    running, timeout=self.settings.hedge_delay, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:  # hedge: a new request for each one newly overdue
                    now = loop.time()
                    overdue = 0
                    for task, (src, started) in running.items():
                        if now - started >= self.settings.hedge_delay and task not in hedged:
                            hedged.add(task)
                            src.slow = True
                            overdue += 1
                    for _ in range(max(overdue, 1)):
                        if start_next():
                            self.report.hedges += 1
                    continue
                for task in done:
                    src, _started = running.pop(task)
                    try:
                        got[src.share] = task.result()
                        src.slow = False
                    except IntegrityError as err:
                        self._fault(self.report.corrupt, src, j, str(err))
                        start_next()
                    except PEER_ERRORS as err:
                        self._fail(src, j, err)
                        start_next()
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        return got

    def _short(self, j: int, have: int, want: int) -> NucluxError:
        faults = [*self.report.unavailable, *self.report.corrupt]
        why = "; ".join(f"share {f.share} ({f.provider}): {f.reason}" for f in faults[-8:])
        return NotEnoughProviders(
            f"segment {j}: only {have} of the {want} blocks needed could be read"
            + (f" ({why})" if why else "")
        )

    def _fault(self, where: list[BlockFault], src: Source, j: int | None, reason: str) -> None:
        where.append(BlockFault(src.share, src.provider, j, reason))

    def _fail(self, src: Source, j: int, err: BaseException) -> None:
        reason = str(err) or type(err).__name__
        if isinstance(err, TimeoutError):
            reason = f"no answer within {self.settings.request_timeout:g} s"
        if isinstance(err, ObjectNotFound):
            self._fault(self.report.unavailable, src, j, f"block missing: {reason}")
            return
        src.dead = reason
        self._fault(self.report.unavailable, src, None, reason)

    async def _fetch(self, src: Source, j: int, slot: bytearray | None = None) -> Block:
        """Share ``src``'s block of segment ``j``, checked against its root; a data share's
        into its place in ``slot`` (a view of it is returned), any other as ``bytes``."""
        roots = await self._roots(src)
        loop = asyncio.get_running_loop()
        started = loop.time()
        oid = block_object_id(self.file_id, src.share, j)
        expected = self.layout.block_size(self.size, j)
        data: Block
        if slot is not None and src.share < self.layout.k:
            place = memoryview(slot)[src.share * expected : (src.share + 1) * expected]
            try:  # with roots, the block's root is the check
                n = await src.client.get_into(
                    src.lease_id,
                    oid,
                    place,
                    capability=src.capability,
                    check_sha256=roots is None,
                    timeout=self.settings.request_timeout,
                )
            except BufferTooSmall:
                raise IntegrityError(
                    f"share {src.share}, segment {j}: a block longer than {expected} bytes"
                ) from None
            data = place[:n]
        else:
            data = await asyncio.wait_for(
                src.client.get(
                    src.lease_id, oid, capability=src.capability, check_sha256=roots is None
                ),
                self.settings.request_timeout,
            )
        if len(data) != expected:
            raise IntegrityError(
                f"share {src.share}, segment {j}: a block of {len(data)} bytes, not {expected}"
            )
        if roots is not None:
            await loop.run_in_executor(
                self.executor,
                lambda: verify_block(data, roots[j], share=src.share, segment=j),
            )
        elapsed = loop.time() - started
        src.latency = elapsed if src.latency == 0 else 0.7 * src.latency + 0.3 * elapsed
        return data

    def _roots_task(self, src: Source) -> asyncio.Task[tuple[bytes, ...] | None]:
        if src.roots_task is None:
            src.roots_task = asyncio.create_task(self._load_roots(src))
            # retrieved here so a source never asked for a block leaves no unretrieved error
            src.roots_task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return src.roots_task

    async def _roots(self, src: Source) -> tuple[bytes, ...] | None:
        if src.roots is not None:
            return src.roots
        try:
            return await asyncio.shield(self._roots_task(src))
        except IntegrityError as err:
            src.dead = str(err)
            raise

    async def _load_roots(self, src: Source) -> tuple[bytes, ...] | None:
        got = await asyncio.wait_for(
            share_roots(src.client, src.lease_id, self.file_id, src.share, src.capability),
            self.settings.request_timeout,
        )
        if got is None:
            return None
        verify_block_roots(got.block_roots, src.root, share=src.share, segments=self.count)
        src.roots = got.block_roots
        return src.roots

    # ------------------------------------------------------------------ decode and write

    def _finish(
        self,
        j: int,
        blocks: dict[int, Block],
        subset: tuple[int, ...] | None,
        slot: bytearray | None = None,
    ) -> None:
        """Decode, open and write segment ``j`` (worker thread); IntegrityError if it does
        not open. When the blocks chosen are the data shares' and were read into ``slot``, in
        their places, the slot holds the sealed segment: nothing to decode or join."""
        k = self.layout.k
        chosen = {i: blocks[i] for i in (subset or sorted(blocks)[:k])}
        sealed_size = self.layout.sealed_size(self.size, j)
        sealed: Block
        if slot is not None and _in_place(chosen, k, slot):
            sealed = memoryview(slot)[:sealed_size]
        else:
            sealed = decode_segment(self.layout, chosen, sealed_size)
        start, _ = self.layout.segment_span(self.size, j)
        with self._lock:
            out = memoryview(self._buffer)[: sealed_size - TAG_BYTES]
            self.cipher.decrypt_into(j, sealed, out, last=j == self.count - 1)
            if len(out) and os.pwrite(self.fd, out, start) != len(out):
                raise OSError(f"short write of segment {j}")
        self._dropper.written(start, len(out))

    async def _recover(self, j: int, blocks: dict[int, Block], slot: bytearray) -> None:
        """Segment ``j`` did not open from unverified blocks: read every other block, find a
        k-subset that opens, and name the providers whose blocks differ from its encoding."""
        blocks = await self._gather_into(j, blocks, self.layout.n, best_effort=True, slot=slot)
        loop = asyncio.get_running_loop()
        for subset in itertools.combinations(sorted(blocks), self.layout.k):
            try:
                await loop.run_in_executor(self.executor, self._finish, j, blocks, subset)
            except IntegrityError:
                continue
            sealed = decode_segment(
                self.layout, {i: blocks[i] for i in subset}, self.layout.sealed_size(self.size, j)
            )
            expected = encode_segment(self.layout, sealed)
            for i, block in blocks.items():
                if bytes(expected[i]) != bytes(block):
                    src = self.sources[i]
                    reason = f"share {i}, segment {j}: the block does not decode with the others"
                    self._fault(self.report.corrupt, src, j, reason)
            return
        raise IntegrityError(
            f"segment {j}: no {self.layout.k} of the {len(blocks)} blocks read open correctly"
        )


def _in_place(chosen: dict[int, Block], k: int, slot: bytearray) -> bool:
    """Whether ``chosen`` is blocks ``0..k-1``, each a view of ``slot``: ``_fetch`` reads a
    data share ``i``'s block into ``slot`` at ``i * P`` only, so ``slot`` then begins with the
    sealed segment."""
    return sorted(chosen) == list(range(k)) and all(
        isinstance(b, memoryview) and b.obj is slot for b in chosen.values()
    )
