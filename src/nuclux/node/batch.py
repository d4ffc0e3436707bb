"""Storing an object batch (``POST /v1/leases/{lease}/objects``, ``nuclux.core.batch``).

The whole body is decoded and checked before anything is written: a malformed batch, or one
carrying a share block (blocks have their own checks and are PUT one by one), changes nothing.
The objects are then written through the store like single PUTs (each hashed, fsynced,
renamed and committed on its own), a few at a time. A batch is not atomic: if object ``i``
fails (a full lease), the objects before it may be stored and the error is the answer; writes
are idempotent, so the client sends the batch again or gives up on those objects.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from nuclux.core.batch import decode_batch
from nuclux.core.reference import parse_block_id
from nuclux.errors import UsageError
from nuclux.node.store import ShardStore

WRITES_AT_ONCE = 8


async def store_batch(
    store: ShardStore, lease_id: int, body: bytes, *, created_at: int
) -> list[dict[str, Any]]:
    """Write every object of ``body`` to ``lease_id``; what each became, in batch order."""
    items = decode_batch(body)
    for oid, _ in items:
        if parse_block_id(oid) is not None:
            raise UsageError(
                f"object {oid.hex()} is a share block: blocks are stored one per PUT, not batched"
            )
    gate = asyncio.Semaphore(WRITES_AT_ONCE)

    async def one(oid: bytes, data: memoryview) -> dict[str, Any]:
        async with gate:
            sha = hashlib.sha256(data).digest()
            async with store.writer(
                lease_id, oid, size=len(data), sha256=sha, created_at=created_at
            ) as w:
                await w.write(data)
                info = await w.commit()
            return {"id": oid.hex(), "sha256": info.sha256.hex(), "size": info.size}

    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(one(oid, data)) for oid, data in items]
    except BaseExceptionGroup as group:  # the first object's error is the answer
        raise group.exceptions[0] from None
    return [t.result() for t in tasks]
