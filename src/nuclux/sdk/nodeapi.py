"""Object ids of the storage protocol, and the block-root request as the SDK uses it.

Object ids (``docs/spec/storage-protocol.md`` §1)::

    f/<fid hex>/s/<i>/<j>    block j of share i
    f/<fid hex>/m            the latest manifest
    i/0                      the head of the account's file index (format 2)
    i/p/<name hex>           a page of it (``index_page_object_id``); format 1: i/<p>

``share_roots`` asks a provider for a share's block roots (``GET .../shares/{fid}/{i}``).
A node that predates that endpoint answers a plain 404 for the route; that is reported as
None ("no roots from this provider") so readers fall back to the node's SHA-256 and the
AES-GCM tags (a bad block is then found by decoding other subsets).
"""

from __future__ import annotations

from nuclux.core.reference import file_prefix, manifest_object_id
from nuclux.errors import UsageError
from nuclux.net.client import NodeClient, NodeRequestError, ShareRoots


def block_object_id(file_id: bytes, share: int, block: int) -> bytes:
    """``f/<fid>/s/<i>/<j>``: block ``block`` of share ``share``."""
    if not 0 <= share <= 255 or not 0 <= block < 2**32:
        raise UsageError(f"no block {block} of share {share}")
    return file_prefix(file_id) + f"s/{share}/{block}".encode("ascii")


def manifest_id(file_id: bytes) -> bytes:
    return manifest_object_id(file_id)


async def share_roots(
    client: NodeClient, lease_id: int, file_id: bytes, share: int, capability: str | None
) -> ShareRoots | None:
    """The block roots a provider reports for a share (self-consistent, not yet checked
    against the manifest); None if the node has no block-root endpoint."""
    try:
        return await client.shares(lease_id, file_id, share, capability=capability)
    except NodeRequestError as err:
        if err.status in (404, 405) and err.code == "unknown":  # no such route on this node
            return None
        raise
