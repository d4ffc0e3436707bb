"""Shares on a node: grouping stored blocks into shares, and the lease tree over them.

Theory of operation
-------------------
A client stores each block of a share as its own object ``f/<fid>/s/<i>/<j>``
(``docs/spec/storage-protocol.md`` sections 1-2). The store computes every block's Merkle root
as the block is written (``store_writer``), so a share's summary needs only its index rows:
``summarise_share`` checks that the blocks are ``0 .. S-1`` without gaps, that every block
but the last is ``B`` bytes (a power of two from 1 KiB to 16 MiB) and that the last is 1 to
``B`` bytes, and derives

    leaf_count = (S-1)·B/L + ceil(last / L)          L = LEAF_BYTES = 256
    share_root = MTH(block roots in j order)

which equals the MTH over the share's leaves because each full block is a perfect subtree of
``B/L`` leaves (``shares.md`` section 1.2, "runs"). A lease root is the MTH over
``entry_hash(share_root, leaf_count)`` of a revision's shares, in the revision's order.

``parse_revision_request`` is the strict reader of ``POST /v1/leases/{lease}/revisions``
bodies. Everything here is pure: values in, values out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from nuclux.core.merkle import LEAF_BYTES, entry_hash, merkle_root
from nuclux.core.reference import FILE_ID_BYTES, MAX_SHARE_INDEX
from nuclux.errors import StoreError, UsageError

MIN_BLOCK_BYTES: Final = 1 << 10
MAX_BLOCK_BYTES: Final = 16 << 20
MAX_REVISION_SHARES: Final = 65_536  # listed shares plus removed shares, per request
MAX_REVISION_BODY: Final = 4 << 20  # 65,536 entries of ["<32 hex>", 255] are ~2.7 MB
SIGNATURE_BYTES: Final = 65
MAX_U64: Final = 2**64 - 1

ShareKey = tuple[bytes, int]  # (file id, share index)

_FID = re.compile(r"[0-9a-f]{32}")
_HEX32 = re.compile(r"[0-9a-f]{64}")
_HEX65 = re.compile(r"[0-9a-f]{130}")


class MalformedShare(StoreError):
    """A share's blocks do not form a well-formed share (gaps, sizes, missing roots)."""


class ShareInRevision(StoreError):
    """The object belongs to a share the latest co-signed revision lists: it cannot change."""


@dataclass(frozen=True, slots=True)
class BlockRow:
    """One stored block of a share: its index, size and Merkle root (None if unknown)."""

    index: int
    size: int
    root: bytes | None


@dataclass(frozen=True, slots=True)
class ShareSummary:
    """A well-formed share as the node holds it."""

    file_id: bytes
    index: int
    blocks: int
    block_bytes: int
    leaf_count: int
    size: int  # bytes over all blocks
    root: bytes
    block_roots: tuple[bytes, ...]

    @property
    def key(self) -> ShareKey:
        return (self.file_id, self.index)

    @property
    def entry(self) -> ShareEntry:
        return ShareEntry(self.file_id, self.index, self.root, self.leaf_count, self.size)


@dataclass(frozen=True, slots=True)
class ShareEntry:
    """One share of a revision: what its lease-tree entry binds, and its size."""

    file_id: bytes
    index: int
    root: bytes
    leaf_count: int
    size: int

    @property
    def key(self) -> ShareKey:
        return (self.file_id, self.index)


@dataclass(frozen=True, slots=True)
class StoredRevision:
    """A lease's latest co-signed revision as the node keeps it, with its shares in order."""

    lease_id: int
    revision: int
    used_bytes: int
    share_count: int
    root: bytes
    consumer_sig: bytes
    provider_sig: bytes
    signed_at: int  # the node's clock when it co-signed (unix seconds)
    entries: tuple[ShareEntry, ...]


@dataclass(frozen=True, slots=True)
class RevisionPlan:
    """What the node computed for a requested revision: its shares' entries (in the
    request's order), the bytes they hold and the lease root over them."""

    revision: int
    entries: tuple[ShareEntry, ...]
    used_bytes: int
    root: bytes

    @property
    def share_count(self) -> int:
        return len(self.entries)


class RevisionConflict(StoreError):
    """The requested revision number is not the latest co-signed one + 1."""

    def __init__(self, message: str, latest: StoredRevision | None) -> None:
        super().__init__(message)
        self.latest = latest


class RevisionMismatch(StoreError):
    """The request's used bytes or root differ from what the node computed."""

    def __init__(self, message: str, plan: RevisionPlan) -> None:
        super().__init__(message)
        self.plan = plan


def share_name(key: ShareKey) -> str:
    return f"share {key[1]} of file {key[0].hex()}"


def _is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def summarise_share(file_id: bytes, index: int, rows: Sequence[BlockRow]) -> ShareSummary:
    """The summary of the share made of ``rows`` (its stored blocks, in any order);
    ``MalformedShare`` saying what is wrong unless it is well formed. No rows at all is the
    caller's "not found", not a malformed share, so it is a ``UsageError`` here."""
    name = share_name((file_id, index))
    if not rows:
        raise UsageError(f"{name} has no blocks")
    blocks = sorted(rows, key=lambda r: r.index)
    for expected, row in enumerate(blocks):
        if row.index != expected:
            raise MalformedShare(
                f"{name}: block {expected} is missing (blocks must be 0..{len(blocks) - 1}"
                f" without gaps; found block {row.index})"
            )
    last = blocks[-1]
    if len(blocks) == 1:
        if not 1 <= last.size <= MAX_BLOCK_BYTES:
            raise MalformedShare(
                f"{name}: its one block is {last.size} bytes, not 1..{MAX_BLOCK_BYTES}"
            )
        block_bytes = max(MIN_BLOCK_BYTES, 1 << (last.size - 1).bit_length())
    else:
        block_bytes = blocks[0].size
        if not (
            _is_power_of_two(block_bytes) and MIN_BLOCK_BYTES <= block_bytes <= MAX_BLOCK_BYTES
        ):
            raise MalformedShare(
                f"{name}: block 0 is {block_bytes} bytes; a share's blocks are a power of two"
                f" from {MIN_BLOCK_BYTES} to {MAX_BLOCK_BYTES} bytes"
            )
        for row in blocks[1:-1]:
            if row.size != block_bytes:
                raise MalformedShare(
                    f"{name}: block {row.index} is {row.size} bytes, not {block_bytes} like"
                    " block 0 (only the last block may be shorter)"
                )
        if not 1 <= last.size <= block_bytes:
            raise MalformedShare(
                f"{name}: its last block {last.index} is {last.size} bytes, not 1..{block_bytes}"
            )
    roots: list[bytes] = []
    for row in blocks:
        if row.root is None:
            raise MalformedShare(f"{name}: block {row.index} has no Merkle root on this node")
        roots.append(row.root)
    count = len(blocks)
    leaves = (count - 1) * (block_bytes // LEAF_BYTES) + -(-last.size // LEAF_BYTES)
    size = (count - 1) * block_bytes + last.size
    return ShareSummary(
        file_id, index, count, block_bytes, leaves, size, merkle_root(roots), tuple(roots)
    )


def lease_root(entries: Sequence[ShareEntry]) -> bytes:
    """The MTH over ``entry_hash(root, leaf_count)`` of ``entries`` in their order."""
    return merkle_root([entry_hash(e.root, e.leaf_count) for e in entries])


# -- revision requests -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RevisionRequest:
    """A parsed ``POST /v1/leases/{lease}/revisions`` body."""

    revision: int
    shares: tuple[ShareKey, ...]
    remove: tuple[ShareKey, ...]
    used_bytes: int
    root: bytes
    signature: bytes


def _uint(body: dict[str, Any], name: str, low: int, high: int) -> int:
    value = body.get(name)
    if type(value) is not int or not low <= value <= high:
        raise UsageError(f"{name!r} must be an integer from {low} to {high}")
    return value


def _hex_field(body: dict[str, Any], name: str, pattern: re.Pattern[str], what: str) -> bytes:
    value = body.get(name)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise UsageError(f"{name!r} must be {what} in lowercase hex")
    return bytes.fromhex(value)


def _share_list(body: dict[str, Any], name: str) -> tuple[ShareKey, ...]:
    value = body.get(name, [])
    if not isinstance(value, list):
        raise UsageError(f"{name!r} must be a list of [file id hex, share index] pairs")
    out: list[ShareKey] = []
    for item in value:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not _FID.fullmatch(item[0])
            or type(item[1]) is not int
            or not 0 <= item[1] <= MAX_SHARE_INDEX
        ):
            raise UsageError(
                f'{name!r}: each entry is ["<{FILE_ID_BYTES * 2} lowercase hex>", '
                f"0..{MAX_SHARE_INDEX}], got {str(item)[:120]}"
            )
        out.append((bytes.fromhex(item[0]), item[1]))
    return tuple(out)


def parse_revision_request(body: object) -> RevisionRequest:
    """Validate a decoded JSON body; ``UsageError`` (400) naming the first problem."""
    if not isinstance(body, dict):
        raise UsageError("a revision request is a JSON object")
    unknown = set(body) - {"revision", "shares", "remove", "used_bytes", "root", "signature"}
    if unknown:
        raise UsageError(f"unknown fields in the revision request: {sorted(unknown)}")
    if "shares" not in body:
        raise UsageError("'shares' is required (the full list of the revision's shares)")
    shares = _share_list(body, "shares")
    remove = _share_list(body, "remove")
    if len(shares) + len(remove) > MAX_REVISION_SHARES:
        raise UsageError(
            f"a revision request lists at most {MAX_REVISION_SHARES} shares and removals"
        )
    if len(set(shares)) != len(shares):
        raise UsageError("'shares' lists a share twice")
    both = set(shares) & set(remove)
    if both:
        raise UsageError(f"{share_name(min(both))} is both listed and removed")
    return RevisionRequest(
        revision=_uint(body, "revision", 1, MAX_U64),
        shares=shares,
        remove=tuple(dict.fromkeys(remove)),
        used_bytes=_uint(body, "used_bytes", 0, MAX_U64),
        root=_hex_field(body, "root", _HEX32, "a 32-byte lease root"),
        signature=_hex_field(body, "signature", _HEX65, "the consumer's 65-byte signature"),
    )
