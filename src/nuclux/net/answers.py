"""What a node's answers decode to: the wire records of the node API and the bounded JSON
decoder every peer-facing parser uses.

``bounded_json`` refuses nesting before ``json.loads`` sees it (see its docstring); the records
(``ShareRoots``, ``CoSignedRevision``, ``StoredObject``) and the 409 errors of the storage
protocol (``RevisionConflict``, ``RevisionMismatch``) are what ``NodeClient`` returns and
raises. ``StoredObject.sha256`` is the digest the node reports: the SHA-256, or a share block's
Merkle root when the block was stored under it (``docs/spec/node-api.md``, "Block digests").
"""

from __future__ import annotations

import json
from array import array
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from nuclux.errors import IntegrityError, NucluxError, UsageError


class NodeRequestError(NucluxError):
    """The node answered with an error this client has no closer class for."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"node error {status} {code}: {message}")
        self.status = status
        self.code = code


@dataclass(frozen=True, slots=True)
class ShareRoots:
    """A node's account of one share (``GET .../shares/{fid}/{i}``)."""

    blocks: int
    block_bytes: int
    leaf_count: int
    size: int
    share_root: bytes
    block_roots: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class CoSignedRevision:
    """A lease's latest revision with both signatures and its shares in order."""

    lease_id: int
    revision: int
    used_bytes: int
    share_count: int
    root: bytes
    consumer_signature: bytes
    provider_signature: bytes
    signed_at: int
    shares: tuple[tuple[bytes, int], ...]  # (file id, share index)
    entries: tuple[tuple[bytes, int, int], ...]  # (share root, leaf count, size) per share


class RevisionConflict(NodeRequestError):
    """409 ``revision_conflict``: the revision number is not the node's latest + 1;
    ``latest`` is the node's latest co-signed revision (None if it has none)."""

    def __init__(self, message: str, latest: CoSignedRevision | None) -> None:
        super().__init__(409, "revision_conflict", message)
        self.latest = latest


class RevisionMismatch(NodeRequestError):
    """409 ``revision_mismatch``: the node computes other used bytes or another root for the
    listed shares; nothing was signed or removed."""

    def __init__(self, message: str, used_bytes: int, root: bytes, share_count: int) -> None:
        super().__init__(409, "revision_mismatch", message)
        self.used_bytes = used_bytes
        self.root = root
        self.share_count = share_count


def revision_from_json(body: Any) -> CoSignedRevision:
    try:
        shares = tuple((bytes.fromhex(f), int(i)) for f, i in body["shares"])
        entries = tuple((bytes.fromhex(r), int(c), int(n)) for r, c, n in body["entries"])
        return CoSignedRevision(
            lease_id=int(body["lease"]),
            revision=int(body["revision"]),
            used_bytes=int(body["used_bytes"]),
            share_count=int(body["share_count"]),
            root=bytes.fromhex(body["root"]),
            consumer_signature=bytes.fromhex(body["consumer_signature"]),
            provider_signature=bytes.fromhex(body["provider_signature"]),
            signed_at=int(body["signed_at"]),
            shares=shares,
            entries=entries,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"malformed revision from the node: {exc!r}") from None


MAX_JSON_DEPTH = 32
# bytes.translate: brackets become +1 / -1 (as signed bytes), everything else is deleted
_DEPTH_MARKS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def bounded_json(data: bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` of a peer's bytes, refusing nesting deeper than ``max_depth`` first
    (``UsageError``). Deep nesting would otherwise exhaust the C stack: libraries this
    process imports (py-evm, py_ecc) raise the recursion limit to 100,000, so the decoder's
    own depth check comes too late and the interpreter crashes. Brackets inside strings
    count too (conservative). Also ``UsageError`` for anything that is not JSON."""
    marks = data.translate(_DEPTH_MARKS, _NOT_BRACKETS)
    if marks and max(accumulate(array("b", marks))) > max_depth:
        raise UsageError(f"JSON nested deeper than {max_depth} levels")
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise UsageError(f"not JSON: {exc}") from None


@dataclass(frozen=True, slots=True)
class StoredObject:
    """What the node stored: ``sha256`` is the content digest it reports, the SHA-256, or a
    share block's Merkle root when ``root_digest`` (block PUTs sign the root)."""

    object_id: bytes
    sha256: bytes
    size: int
    root_digest: bool = False


def stored_from_json(object_id: bytes, x: Any) -> StoredObject:
    if "root" in x:
        return StoredObject(object_id, bytes.fromhex(x["root"]), int(x["size"]), True)
    return StoredObject(object_id, bytes.fromhex(x["sha256"]), int(x["size"]))


def checked_stored(object_id: bytes, answer: Any, digest: bytes, size: int) -> StoredObject:
    """A node's answer to a PUT, checked against what was sent (``IntegrityError`` if it is
    malformed or reports another digest or size)."""
    try:
        stored = stored_from_json(object_id, answer)
    except (KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"malformed answer to a PUT: {exc!r}") from None
    if stored.sha256 != digest or stored.size != size:
        raise IntegrityError(
            f"the node stored object {object_id.hex()} as {stored.sha256.hex()}"
            f" ({stored.size} bytes), not what was sent"
        )
    return stored
