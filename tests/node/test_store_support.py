"""Helpers shared by the shard store tests (this module holds no tests)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from nuclux.node.store import ObjectInfo, ShardStore
from nuclux.node.store_types import DEFAULT_MAX_OBJECT_SIZE

GRACE = 100
CAPACITY = 1 << 30


async def open_store(
    root: Path,
    capacity: int = CAPACITY,
    *,
    max_object_size: int = DEFAULT_MAX_OBJECT_SIZE,
    verify_content: bool = True,
) -> ShardStore:
    return await ShardStore.open(
        root,
        capacity,
        grace_seconds=GRACE,
        max_object_size=max_object_size,
        verify_content=verify_content,
    )


async def put(
    store: ShardStore, lease: int, oid: bytes, data: bytes, *, chunk: int = 1 << 16
) -> ObjectInfo:
    async with store.writer(lease, oid) as w:
        for i in range(0, len(data), chunk):
            await w.write(data[i : i + chunk])
        return await w.commit()


async def get(store: ShardStore, lease: int, oid: bytes) -> bytes:
    return b"".join([c async for c in store.read(lease, oid)])


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def blob_files(root: Path) -> set[bytes]:
    """Digests of the blob files on disk."""
    return {bytes.fromhex(p.name) for p in (root / "blobs").glob("??/*")}


def tmp_files(root: Path) -> list[Path]:
    return list((root / "tmp").iterdir())
