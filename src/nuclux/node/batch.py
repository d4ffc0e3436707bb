"""Storing an object batch (``POST /v1/leases/{lease}/objects``, ``nuclux.core.batch``).

The whole body is decoded and checked before anything is written: a malformed batch, or one
carrying a share block (blocks have their own checks and are PUT one by one), changes nothing.
The objects are then stored together (``ShardStore.put_many``: a temp file each, one index
transaction for all), so a batch is atomic: every object becomes visible, or none does (a full
lease refuses the whole batch).
"""

from __future__ import annotations

from typing import Any

from nuclux.core.batch import decode_batch
from nuclux.core.reference import parse_block_id
from nuclux.errors import UsageError
from nuclux.node.store import ShardStore


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
    infos = await store.put_many(lease_id, items, created_at=created_at)
    return [{"id": i.object_id.hex(), "sha256": i.sha256.hex(), "size": i.size} for i in infos]
