"""Object batches: many small objects of one lease in one request body.

Storing a small file writes a few small objects (its manifest copies, later its time-stamp
proofs); sent one request each, the per-request costs (a signature, an HTTP exchange, a handler
run) dominate. A batch carries up to ``MAX_COUNT`` objects of at most ``MAX_OBJECT_BYTES``
each in one body (``docs/spec/node-api.md``, "Object batches")::

    batch  = "NXB1" | u16 count | count x record           (integers big-endian)
    record = u8 id_len (1..64) | id | u32 size | size bytes

Object ids are unique within a batch; nothing may follow the last record. Decoding is strict:
anything else is ``UsageError`` before a single object is looked at.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from nuclux.errors import UsageError

MAGIC: Final = b"NXB1"
MAX_COUNT: Final = 1024
MAX_OBJECT_BYTES: Final = 64 << 10
MAX_ID_BYTES: Final = 64
MAX_BATCH_BYTES: Final = 4 << 20  # a body never exceeds this (the node refuses larger ones)
_HEAD: Final = len(MAGIC) + 2


def record_bytes(object_id: bytes, size: int) -> int:
    """What one object adds to a batch body."""
    return 1 + len(object_id) + 4 + size


def encode_batch(items: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The body carrying ``(object id, data)`` pairs, in order."""
    _check_count(len(items))
    out = [MAGIC, len(items).to_bytes(2, "big")]
    seen: set[bytes] = set()
    total = _HEAD
    for oid, data in items:
        _check_item(oid, len(data), seen)
        out += [len(oid).to_bytes(1, "big"), oid, len(data).to_bytes(4, "big"), data]
        total += record_bytes(oid, len(data))
    if total > MAX_BATCH_BYTES:
        raise UsageError(f"a batch is at most {MAX_BATCH_BYTES} bytes, not {total}")
    return b"".join(out)


def decode_batch(body: bytes) -> list[tuple[bytes, memoryview]]:
    """The ``(object id, data)`` pairs of a batch body; ``UsageError`` for any malformation."""
    if len(body) > MAX_BATCH_BYTES:
        raise UsageError(f"a batch is at most {MAX_BATCH_BYTES} bytes, not {len(body)}")
    if len(body) < _HEAD or body[: len(MAGIC)] != MAGIC:
        raise UsageError("not an object batch (no NXB1 header)")
    view = memoryview(body)
    count = int.from_bytes(body[len(MAGIC) : _HEAD], "big")
    _check_count(count)
    pos = _HEAD
    items: list[tuple[bytes, memoryview]] = []
    seen: set[bytes] = set()
    for _ in range(count):
        if pos >= len(body):
            raise UsageError("the batch ends before its last record")
        id_len = body[pos]
        oid = bytes(view[pos + 1 : pos + 1 + id_len])
        head_end = pos + 1 + id_len + 4
        if id_len == 0 or head_end > len(body):
            raise UsageError("a batch record's header is cut short or has an empty id")
        size = int.from_bytes(body[head_end - 4 : head_end], "big")
        _check_item(oid, size, seen)
        if head_end + size > len(body):
            raise UsageError(f"object {oid.hex()} is cut short in the batch")
        items.append((oid, view[head_end : head_end + size]))
        pos = head_end + size
    if pos != len(body):
        raise UsageError(f"{len(body) - pos} bytes follow the last record of the batch")
    return items


def _check_count(count: int) -> None:
    if not 1 <= count <= MAX_COUNT:
        raise UsageError(f"a batch holds 1 to {MAX_COUNT} objects, not {count}")


def _check_item(oid: bytes, size: int, seen: set[bytes]) -> None:
    if not 1 <= len(oid) <= MAX_ID_BYTES:
        raise UsageError(f"object ids are 1 to {MAX_ID_BYTES} bytes")
    if size > MAX_OBJECT_BYTES:
        raise UsageError(f"objects in a batch are at most {MAX_OBJECT_BYTES} bytes, not {size}")
    if oid in seen:
        raise UsageError(f"object {oid.hex()} appears twice in the batch")
    seen.add(oid)


def chunk(items: Sequence[tuple[bytes, bytes]]) -> list[list[tuple[bytes, bytes]]]:
    """``items`` (distinct ids, each at most ``MAX_OBJECT_BYTES``) in order, cut into as few
    consecutive batches as the limits allow."""
    out: list[list[tuple[bytes, bytes]]] = []
    size = MAX_BATCH_BYTES
    for oid, data in items:
        more = record_bytes(oid, len(data))
        if not out or len(out[-1]) == MAX_COUNT or size + more > MAX_BATCH_BYTES:
            out.append([])
            size = _HEAD
        out[-1].append((oid, data))
        size += more
    return out
