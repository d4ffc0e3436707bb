"""Object ids of the storage protocol and the node endpoints the SDK uses beyond plain objects.

Object ids (``docs/spec/storage-protocol.md`` §1)::

    f/<fid hex>/s/<i>/<j>    block j of share i
    f/<fid hex>/m            the latest manifest
    i/0                      the account's file index

ADAPTER (marked): the block-root endpoint (``GET .../shares/{fid}/{i}``) and the revision
endpoints (``POST .../revisions``, ``GET .../revisions/latest``) are being added to
``NodeClient`` as ``shares()``, ``revise()`` and ``latest_revision()``. Until a client has
them these functions answer ``None`` ("not supported by this node client") and the SDK goes
on without them: downloads then rely on the node's SHA-256 and the AES-GCM tags (a bad
block is found by decoding other subsets), and no revision is co-signed. When the methods
land, only this module changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nuclux.core.reference import file_prefix, index_object_id, manifest_object_id
from nuclux.errors import IntegrityError, UsageError
from nuclux.net.client import NodeClient, NodeRequestError

INDEX_OBJECT = index_object_id(0)


def block_object_id(file_id: bytes, share: int, block: int) -> bytes:
    """``f/<fid>/s/<i>/<j>``: block ``block`` of share ``share``."""
    if not 0 <= share <= 255 or not 0 <= block < 2**32:
        raise UsageError(f"no block {block} of share {share}")
    return file_prefix(file_id) + f"s/{share}/{block}".encode("ascii")


def manifest_id(file_id: bytes) -> bytes:
    return manifest_object_id(file_id)


@dataclass(frozen=True, slots=True)
class ShareRoots:
    """A provider's account of one share: its block roots (unverified until checked)."""

    block_roots: tuple[bytes, ...]
    share_root: bytes
    leaf_count: int


def _field(obj: Any, name: str) -> Any:
    if isinstance(obj, Mapping):
        return obj[name]
    return getattr(obj, name)


def _hex(value: Any) -> bytes:
    return value if isinstance(value, bytes) else bytes.fromhex(str(value))


async def share_roots(
    client: NodeClient, lease_id: int, file_id: bytes, share: int, capability: str | None
) -> ShareRoots | None:
    """The block roots a provider reports for a share; None if the client cannot ask."""
    fn = getattr(client, "shares", None)
    if fn is None:
        return None
    try:
        raw = await fn(lease_id, file_id, share, capability=capability)
    except NodeRequestError as err:
        if err.status in (404, 405) and err.code == "unknown":  # the node has no such route
            return None
        raise
    try:
        roots = tuple(_hex(r) for r in _field(raw, "block_roots"))
        return ShareRoots(roots, _hex(_field(raw, "share_root")), int(_field(raw, "leaf_count")))
    except (KeyError, AttributeError, TypeError, ValueError) as err:
        raise IntegrityError(f"share {share}: malformed block-root answer ({err})") from None


@dataclass(frozen=True, slots=True)
class LatestRevision:
    """The provider's latest co-signed revision of a lease and the shares it lists."""

    revision: int
    used_bytes: int
    root: bytes
    consumer_signature: bytes
    shares: tuple[tuple[bytes, int], ...]  # (file id, share index), in the revision's order
    entries: tuple[tuple[bytes, int], ...] | None  # (share root, leaf count) when given


def supports_revisions(client: NodeClient) -> bool:
    return hasattr(client, "revise") and hasattr(client, "latest_revision")


def revision_from(raw: Any) -> LatestRevision | None:
    """Our view of a node's co-signed revision (from ``latest_revision`` or a conflict)."""
    if raw is None:
        return None
    try:
        pairs = tuple((_hex(fid), int(i)) for fid, i in _field(raw, "shares"))
        try:
            entries: tuple[tuple[bytes, int], ...] | None = tuple(
                (_hex(e[0]), int(e[1])) for e in _field(raw, "entries")
            )
        except (KeyError, AttributeError):
            entries = None
        return LatestRevision(
            int(_field(raw, "revision")),
            int(_field(raw, "used_bytes")),
            _hex(_field(raw, "root")),
            _hex(_field(raw, "consumer_signature")),
            pairs,
            entries,
        )
    except (KeyError, AttributeError, TypeError, ValueError) as err:
        raise IntegrityError(f"malformed revision from the node ({err})") from None


async def latest_revision(client: NodeClient, lease_id: int) -> LatestRevision | None:
    """None when the lease has no revision yet (or the client cannot ask)."""
    fn = getattr(client, "latest_revision", None)
    if fn is None:
        return None
    return revision_from(await fn(lease_id))


async def revise(
    client: NodeClient,
    lease_id: int,
    *,
    revision: int,
    shares: Sequence[tuple[bytes, int]],
    remove: Sequence[tuple[bytes, int]],
    used_bytes: int,
    root: bytes,
    signature: bytes,
) -> bytes | None:
    """Ask the provider to co-sign a revision; its signature, or None if unsupported."""
    fn = getattr(client, "revise", None)
    if fn is None:
        return None
    out = await fn(
        lease_id,
        revision=revision,
        shares=list(shares),
        remove=list(remove),
        used_bytes=used_bytes,
        root=root,
        signature=signature,
    )
    return _hex(out) if out is not None else None
