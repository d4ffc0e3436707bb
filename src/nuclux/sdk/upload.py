"""The spread upload: file -> segments -> AES-GCM -> Reed-Solomon -> n providers in parallel.

Theory of operation
-------------------
One producer prepares segments in order on a worker thread (read into a reused buffer, seal
into fresh bytes that the coder takes without a copy, encode into ``n`` blocks, hash each
block's Merkle root: the digest its PUT signs and the node checks) and hands block ``i`` of
each segment to lane ``i``. Each lane is a task that PUTs its blocks, in order, as
``f/<fid>/s/<i>/<j>`` to the provider currently holding share ``i``, with up to
``PUTS_PER_LANE`` requests in flight (outcomes taken in order). A semaphore
admits at most ``segments_in_flight`` segments between preparation and the moment all ``n``
lanes have stored them, so memory is bounded by segments, never by the file.

A lane whose provider fails (an error after one retry, or no answer within
``request_timeout``), or lags (a watchdog sees no segment completed for ``lag_timeout`` while
at most n - k lanes still hold the oldest one, and cancels their requests), asks for a
replacement (another provider and lease, chosen by the
caller) and rebuilds the share there: the segments already released are read again from the
file and sealed and encoded again (deterministic: same key, data id and index give the same
blocks), and each rebuilt block must hash to the root recorded the first time, else the file
changed during the upload and the upload stops. The other lanes go on meanwhile, at most the
window ahead.

The result is, per share, the provider, the lease and the block roots, from which the share
roots in the manifest are computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from nuclux.core.erasure import Layout, block_root, encode_segment, share_root
from nuclux.core.merkle import leaf_count
from nuclux.core.segment import SegmentCipher
from nuclux.errors import IntegrityError, NucluxError, QuotaExceeded
from nuclux.sdk.leases import Placement
from nuclux.sdk.nodeapi import block_object_id
from nuclux.sdk.peers import PEER_ERRORS
from nuclux.sdk.settings import NotEnoughProviders, Progress, StorageSettings, first_error

Block = bytes | memoryview
Prepared = tuple[Sequence[Block], Sequence[bytes]]
"""A segment ready to send: its ``n`` blocks and their Merkle roots."""

PUTS_PER_LANE = 2
"""Requests a lane keeps in flight: block j + 1 crosses the network while the provider
fsyncs and commits block j (a block's PUT spends much of its time in that wait)."""

Replace = Callable[[int, Placement, str], Awaitable[Placement]]
"""``replace(share, failed placement, reason)`` -> a placement on another provider."""


@dataclass(frozen=True, slots=True)
class Replacement:
    share: int
    old_provider: str
    new_provider: str
    reason: str


@dataclass(slots=True)
class UploadResult:
    placements: list[Placement]
    block_roots: list[list[bytes]]  # [share][segment]
    share_size: int
    replacements: list[Replacement] = field(default_factory=list)

    @property
    def share_roots(self) -> list[bytes]:
        return [share_root(roots) for roots in self.block_roots]

    @property
    def leaf_count(self) -> int:
        return leaf_count(self.share_size)


class SegmentEncoder:
    """Seals and encodes segments of one file on one worker thread, reusing its buffers."""

    def __init__(self, path: str, size: int, layout: Layout, cipher: SegmentCipher) -> None:
        self.size, self.layout, self.cipher = size, layout, cipher
        self.count = layout.segment_count(size)
        self._fd = os.open(path, os.O_RDONLY)
        self._plain = bytearray(layout.segment_bytes)
        self._lock = threading.Lock()  # a backfill may run beside the producer

    def close(self) -> None:
        os.close(self._fd)

    def prepare(self, index: int) -> Prepared:
        """(blocks, block roots) of segment ``index``. The blocks are views
        of the coder's own output (fresh for every segment, never written again): not copied."""
        start, stop = self.layout.segment_span(self.size, index)
        length = stop - start
        with self._lock:
            plain = memoryview(self._plain)[:length]
            got = os.preadv(self._fd, [plain], start) if length else 0
            if got != length:
                raise IntegrityError(f"the file shrank while it was being uploaded ({got} bytes)")
            # fresh bytes, as the coder takes them (a reused buffer would be copied for it)
            sealed = self.cipher.encrypt(index, plain, last=index == self.count - 1)
            blocks = encode_segment(self.layout, sealed)
        return blocks, [block_root(b) for b in blocks]


@dataclass(slots=True)
class _Segment:
    blocks: list[Block | None]
    roots: list[bytes]
    pending: int


@dataclass(slots=True)
class _Lane:
    share: int
    placement: Placement
    stored: int = 0  # blocks 0 .. stored-1 are on the current placement
    queue: asyncio.Queue[int | None] = field(default_factory=asyncio.Queue)
    busy: set[asyncio.Future[Any]] = field(default_factory=set)  # the PUTs in flight
    kicked: bool = False  # the watchdog cancelled ``busy``: the provider lags


class Lagging(NucluxError):
    """A provider fell so far behind the others that the upload stalled on it."""


class Uploader:
    def __init__(
        self,
        *,
        path: str,
        size: int,
        layout: Layout,
        cipher: SegmentCipher,
        file_id: bytes,
        placements: list[Placement],
        replace: Replace,
        settings: StorageSettings,
        executor: Executor,
        progress: Progress | None = None,
    ) -> None:
        if len(placements) != layout.n:
            raise NucluxError(f"{layout.n} placements needed, {len(placements)} given")
        self.encoder = SegmentEncoder(path, size, layout, cipher)
        self.size, self.layout, self.file_id = size, layout, file_id
        self.settings, self.executor, self.progress = settings, executor, progress
        self.replace_fn = replace
        self.lanes = [_Lane(i, p) for i, p in enumerate(placements)]
        self.roots: list[list[bytes]] = [[] for _ in placements]
        self.segments: dict[int, _Segment] = {}
        self.window = asyncio.Semaphore(settings.segments_in_flight)
        self.replacements: list[Replacement] = []
        self.done_bytes = 0
        self.done_segments = 0
        self.open_lanes = len(self.lanes)
        self.lanes_done = asyncio.Event()  # set when the last lane ends: the watchdog stops

    async def run(self) -> UploadResult:
        try:
            async with asyncio.TaskGroup() as tg:
                for lane in self.lanes:
                    tg.create_task(self._lane(lane))
                tg.create_task(self._produce())
                tg.create_task(self._watch())
        except BaseExceptionGroup as group:
            raise first_error(group) from None
        finally:
            self.encoder.close()
        return UploadResult(
            [lane.placement for lane in self.lanes],
            self.roots,
            self.layout.share_size(self.size),
            self.replacements,
        )

    async def _prepare(self, index: int) -> Prepared:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.encoder.prepare, index)

    async def _produce(self) -> None:
        for j in range(self.encoder.count):
            await self.window.acquire()
            blocks, roots = await self._prepare(j)
            for i, root in enumerate(roots):
                self.roots[i].append(root)
            self.segments[j] = _Segment(list(blocks), list(roots), len(self.lanes))
            for lane in self.lanes:
                lane.queue.put_nowait(j)
        for lane in self.lanes:
            lane.queue.put_nowait(None)

    async def _lane(self, lane: _Lane) -> None:
        try:
            await self._lane_blocks(lane)
        finally:
            self.open_lanes -= 1
            if self.open_lanes <= 0:
                self.lanes_done.set()

    async def _lane_blocks(self, lane: _Lane) -> None:
        """Send the lane's blocks in order, up to ``PUTS_PER_LANE`` requests at a time (the
        next block travels while the provider makes the last one durable); results are taken
        in order. On a failure the requests behind it are cancelled, the provider is swapped,
        and those blocks go the slow way (``_deliver``: rebuild, then store, one at a time)."""
        sent: deque[tuple[int, asyncio.Task[None]]] = deque()
        try:
            while (j := await lane.queue.get()) is not None:
                seg = self.segments[j]
                block = seg.blocks[lane.share]
                if block is None:  # pragma: no cover - each lane takes its block once
                    raise NucluxError(f"block {j} of share {lane.share} was already sent")
                if lane.stored + len(sent) == j:  # everything before j is stored or on its way
                    put = self._put(lane, j, block, seg.roots[lane.share])
                    sent.append((j, asyncio.create_task(put)))
                    if len(sent) < PUTS_PER_LANE:
                        continue
                    j, task = sent.popleft()
                    await self._settle(lane, j, task, sent)
                else:  # pragma: no cover - the queue gives indices in order, none skipped
                    await self._deliver(lane, j, block, seg.roots[lane.share])
                    self._stored(lane, j)
            while sent:
                j, task = sent.popleft()
                await self._settle(lane, j, task, sent)
        finally:  # the lane failed or is cancelled: stop its requests and collect them
            for _, task in sent:
                task.cancel()
            await asyncio.gather(*(task for _, task in sent), return_exceptions=True)

    async def _settle(
        self,
        lane: _Lane,
        j: int,
        task: asyncio.Task[None],
        behind: deque[tuple[int, asyncio.Task[None]]],
    ) -> None:
        """Take the outcome of block ``j``'s request; on a provider's failure, swap it and
        store ``j`` and every block still ``behind`` it on the new provider."""
        try:
            await task
        except IntegrityError:
            raise
        except PEER_ERRORS as err:
            redo = [j] + [i for i, _ in behind]
            for _, t in behind:
                t.cancel()
            await asyncio.gather(*(t for _, t in behind), return_exceptions=True)
            behind.clear()
            await self._swap(lane, err)
            for i in redo:
                seg = self.segments[i]
                block = seg.blocks[lane.share]
                if block is None:  # pragma: no cover - released only once stored
                    raise NucluxError(f"block {i} of share {lane.share} was released") from None
                await self._deliver(lane, i, block, seg.roots[lane.share])
                self._stored(lane, i)
            return
        lane.stored = j + 1
        self._stored(lane, j)

    def _stored(self, lane: _Lane, j: int) -> None:
        """Block ``j`` of the lane's share is stored: release the segment once all are."""
        seg = self.segments[j]
        seg.blocks[lane.share] = None
        seg.pending -= 1
        if seg.pending == 0:
            del self.segments[j]
            self.done_segments += 1
            self.window.release()
            start, stop = self.layout.segment_span(self.size, j)
            self.done_bytes += stop - start
            if self.progress is not None:
                self.progress(self.done_bytes, self.size)

    async def _deliver(self, lane: _Lane, j: int, block: Block, root: bytes) -> None:
        """Store block ``j`` of the lane's share, first rebuilding any earlier blocks a new
        placement lacks; swap the placement when it fails."""
        while True:
            try:
                while lane.stored < j:
                    old = lane.stored
                    blocks, roots = await self._prepare(old)
                    if roots[lane.share] != self.roots[lane.share][old]:
                        raise IntegrityError(
                            f"segment {old} encodes differently than before: the file changed"
                            " during the upload; upload it again"
                        )
                    await self._put(lane, old, blocks[lane.share], roots[lane.share])
                    lane.stored = old + 1
                await self._put(lane, j, block, root)
                lane.stored = j + 1
                return
            except IntegrityError:
                raise
            except PEER_ERRORS as err:
                await self._swap(lane, err)

    async def _put(self, lane: _Lane, j: int, block: Block, root: bytes) -> None:
        p = lane.placement
        oid = block_object_id(self.file_id, lane.share, j)
        timeout = self.settings.request_timeout

        async def send() -> None:  # the request starts with the task (never unawaited)
            await asyncio.wait_for(p.client.put(p.lease_id, oid, block, root=root), timeout)

        for attempt in (1, 2):
            busy = asyncio.ensure_future(send())
            lane.busy.add(busy)
            try:
                await busy
                return
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not lane.kicked or (task is not None and task.cancelling()):
                    busy.cancel()
                    raise  # the upload itself is being cancelled
                raise Lagging(
                    f"fell behind the other providers for {self.settings.lag_timeout:g} s"
                ) from None
            except (TimeoutError, QuotaExceeded):
                raise  # a hung or full provider is not retried
            except PEER_ERRORS:
                if attempt == 2:
                    raise
            finally:
                lane.busy.discard(busy)

    async def _watch(self) -> None:
        """Kick the lanes the upload waits on when it has made no progress for
        ``lag_timeout`` seconds, if they are at most n - k (else the network itself is slow)."""
        loop = asyncio.get_running_loop()
        lag = self.settings.lag_timeout
        seen, since = self.done_segments, loop.time()
        while self.open_lanes:
            # woken by the last lane's end: a sleep here held every upload up to a second
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.lanes_done.wait(), min(1.0, lag / 4))
            if self.lanes_done.is_set():
                return
            now = loop.time()
            if self.done_segments != seen or not self.segments:
                seen, since = self.done_segments, now
                continue
            if now - since < lag:
                continue
            oldest = self.segments[min(self.segments)]
            behind = [lane for lane in self.lanes if oldest.blocks[lane.share] is not None]
            if 0 < len(behind) <= self.layout.n - self.layout.k:
                for lane in behind:
                    for busy in list(lane.busy):
                        if not busy.done():
                            lane.kicked = True
                            busy.cancel()
            since = now  # give the replacements time

    async def _swap(self, lane: _Lane, err: BaseException) -> None:
        old = lane.placement
        reason = str(err) or type(err).__name__
        if isinstance(err, TimeoutError):
            reason = f"no answer within {self.settings.request_timeout:g} s"
        if len(self.replacements) >= self.settings.max_replacements:
            raise NotEnoughProviders(
                f"share {lane.share}: provider {old.provider.owner} failed ({reason}) and"
                f" {len(self.replacements)} providers were replaced already; giving up"
            )
        new = await self.replace_fn(lane.share, old, reason)
        self.replacements.append(
            Replacement(lane.share, old.provider.owner, new.provider.owner, reason)
        )
        lane.placement = new
        lane.stored = 0
        lane.kicked = False
