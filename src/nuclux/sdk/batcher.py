"""Small-object writes coalesced per lease into batch requests (``nuclux.core.batch``).

Storing many small files writes many small objects (manifest copies, time-stamp proofs) to
the same few leases. ``Batcher.put`` queues one object and returns when it is stored; for each
lease one sender sends whatever has queued as one ``POST .../objects`` while the previous batch
is in flight, so batches form by themselves under load and a lone write waits for nothing.
A failed batch fails each of its objects (the caller decides, as for a failed PUT).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from nuclux.core.batch import MAX_BATCH_BYTES, MAX_COUNT, MAX_OBJECT_BYTES, record_bytes
from nuclux.errors import UsageError
from nuclux.net.client import NodeClient

_HEADROOM = 64  # the batch header
LINGER_ENOUGH = 64  # a lingering batch goes at once when this many objects wait


@dataclass(slots=True)
class _Item:
    object_id: bytes
    data: bytes
    done: asyncio.Future[None]
    linger: float = 0.0


class Batcher:
    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        self._queues: dict[int, list[_Item]] = {}
        self._senders: dict[int, asyncio.Task[None]] = {}

    async def put(
        self,
        lease_id: int,
        client: NodeClient,
        object_id: bytes,
        data: bytes,
        *,
        linger: float = 0.0,
    ) -> None:
        """Store ``data`` (at most 64 KiB) as ``object_id`` on ``lease_id``. ``linger``: a
        batch starting with this object waits that long for company first (for writes
        nobody waits on at once, such as packed files' manifests written behind)."""
        if len(data) > MAX_OBJECT_BYTES:
            raise UsageError(f"batched objects are at most {MAX_OBJECT_BYTES} bytes")
        item = _Item(object_id, data, asyncio.get_running_loop().create_future(), linger)
        self._queues.setdefault(lease_id, []).append(item)
        if lease_id not in self._senders:
            self._senders[lease_id] = asyncio.create_task(self._send(lease_id, client))
        await item.done

    async def close(self) -> None:
        senders = list(self._senders.values())
        for task in senders:
            task.cancel()
        await asyncio.gather(*senders, return_exceptions=True)
        for queue in self._queues.values():
            for item in queue:
                item.done.cancel()
        self._queues.clear()

    async def _send(self, lease_id: int, client: NodeClient) -> None:
        try:
            while queue := self._queues.get(lease_id):
                if queue[0].linger > 0 and len(queue) < LINGER_ENOUGH:
                    await asyncio.sleep(queue[0].linger)
                    queue = self._queues.get(lease_id) or queue
                batch = _take(queue)
                try:
                    await asyncio.wait_for(
                        client.put_batch(lease_id, [(i.object_id, i.data) for i in batch]),
                        self._timeout,
                    )
                except asyncio.CancelledError:
                    for item in batch:
                        item.done.cancel()
                    raise
                except Exception as err:
                    for item in batch:
                        if not item.done.done():
                            item.done.set_exception(err)
                else:
                    for item in batch:
                        if not item.done.done():
                            item.done.set_result(None)
        finally:
            self._senders.pop(lease_id, None)
            if not self._queues.get(lease_id):
                self._queues.pop(lease_id, None)


def _take(queue: list[_Item]) -> list[_Item]:
    """Remove and return the longest prefix of ``queue`` that makes one valid batch (no
    object id twice: a later write of the same object goes in the next batch)."""
    taken: list[_Item] = []
    seen: set[bytes] = set()
    size = _HEADROOM
    for item in queue:
        size += record_bytes(item.object_id, len(item.data))
        if taken and (len(taken) == MAX_COUNT or size > MAX_BATCH_BYTES or item.object_id in seen):
            break
        taken.append(item)
        seen.add(item.object_id)
    del queue[: len(taken)]
    return taken
