"""Read capabilities: an owner-signed, expiring grant to read named objects of one lease.

Theory of operation
-------------------
The consumer of a storage lease (its owner) lets another address read some of its objects by
signing a capability and handing it over; the grantee sends it to the node in the
``X-Nuclux-Capability`` header (unpadded base64url of the bytes below). The node checks it
with ``verify_capability`` against its own view of the chain: the signature recovers to
``owner``, ``owner`` is the lease's consumer, the requester is ``grantee``, the lease id is
the one in the path, ``now`` is before ``expires_at`` and the object is covered. Nothing
else is needed: capabilities are bearer-proof (useless to anyone but the grantee, who must
also sign the request) and stateless. They cannot be revoked before they expire except by
ending the lease, so issue them with short lives.

Byte layout (integers big-endian; frozen by golden vectors, specified in docs/spec/auth.md)::

    version u8 = 1 | lease_id 32 | owner 20 | grantee 20 | expires_at u64 | nonce 16
    | scope u8: 0 = objects: count u16 (1..1024), then per id: len u8 (1..64) || id
                1 = prefix:  len u8 (0..64) || prefix
    | signature 65 (r || s || v over sha256(lp(b"nuclux/capability/v1") || all of the above))

Object ids in a list are strictly increasing (bytewise), so every capability has exactly one
encoding and ``covers`` is a binary search. An empty prefix covers the whole lease.
``expires_at`` is unix seconds; the node passes chain time (the latest block's timestamp)
as ``now``, as for every other expiry (ARCHITECTURE.md, Time).
"""

from __future__ import annotations

import bisect
import hmac
from dataclasses import dataclass
from typing import Final

from nuclux.core.auth import (
    NONCE_BYTES,
    SIGNATURE_BYTES,
    address_bytes,
    b64url_decode,
    b64url_encode,
    recover_signer,
    sign_message,
    signer_of,
    to_address,
)
from nuclux.core.types import Address, LeaseId
from nuclux.errors import Forbidden, Unauthenticated, UsageError

CAPABILITY_TAG: Final = b"nuclux/capability/v1"
CAPABILITY_VERSION: Final = 1
MAX_OBJECT_ID_BYTES: Final = 64
MAX_OBJECTS: Final = 1024
MAX_CAPABILITY_BYTES: Final = 1 + 32 + 20 + 20 + 8 + NONCE_BYTES + 1 + 2 + MAX_OBJECTS * 65 + 65
MAX_CAPABILITY_CHARS: Final = (MAX_CAPABILITY_BYTES * 4 + 2) // 3
_SCOPE_OBJECTS: Final = 0
_SCOPE_PREFIX: Final = 1
_HEAD: Final = 1 + 32 + 20 + 20 + 8 + NONCE_BYTES


@dataclass(frozen=True, slots=True)
class Capability:
    """A decoded capability. Exactly one of ``objects`` (sorted, unique) and ``prefix``."""

    lease_id: LeaseId
    owner: Address
    grantee: Address
    objects: tuple[bytes, ...]
    prefix: bytes | None
    expires_at: int
    nonce: bytes
    signature: bytes
    version: int = CAPABILITY_VERSION

    def covers(self, object_id: bytes) -> bool:
        """Whether the capability names ``object_id`` (or a prefix of it)."""
        if self.prefix is not None:
            return object_id.startswith(self.prefix)
        i = bisect.bisect_left(self.objects, object_id)
        return i < len(self.objects) and self.objects[i] == object_id


def _body(
    lease_id: int,
    owner: bytes,
    grantee: bytes,
    objects: tuple[bytes, ...],
    prefix: bytes | None,
    expires_at: int,
    nonce: bytes,
) -> bytes:
    if not 0 < lease_id < 2**256 or not 0 <= expires_at < 2**64 or len(nonce) != NONCE_BYTES:
        raise UsageError("lease_id must be 1..2**256-1, expires_at a u64, nonce 16 bytes")
    out = [bytes([CAPABILITY_VERSION]), lease_id.to_bytes(32, "big"), owner, grantee]
    out += [expires_at.to_bytes(8, "big"), nonce]
    if prefix is not None:
        if objects or len(prefix) > MAX_OBJECT_ID_BYTES:
            raise UsageError(f"give objects or a prefix of at most {MAX_OBJECT_ID_BYTES} bytes")
        out += [bytes([_SCOPE_PREFIX, len(prefix)]), prefix]
    else:
        if not 0 < len(objects) <= MAX_OBJECTS:
            raise UsageError(f"a capability names 1 to {MAX_OBJECTS} objects (or a prefix)")
        out += [bytes([_SCOPE_OBJECTS]), len(objects).to_bytes(2, "big")]
        for i, oid in enumerate(objects):
            if not 0 < len(oid) <= MAX_OBJECT_ID_BYTES or (i and objects[i - 1] >= oid):
                raise UsageError("object ids must be 1-64 bytes, sorted and unique")
            out += [bytes([len(oid)]), oid]
    return b"".join(out)


def _signed(body: bytes) -> bytes:
    return len(CAPABILITY_TAG).to_bytes(2, "big") + CAPABILITY_TAG + body


def issue_capability(
    owner_private_key: bytes,
    *,
    lease_id: int,
    grantee: str,
    expires_at: int,
    nonce: bytes,
    objects: list[bytes] | tuple[bytes, ...] = (),
    prefix: bytes | None = None,
) -> Capability:
    """Sign a grant for ``grantee`` to read ``objects`` (any order) or everything under
    ``prefix`` in lease ``lease_id`` until ``expires_at``. The signer must be the lease's
    consumer for nodes to honour it."""
    ids = tuple(sorted(set(objects)))
    owner = signer_of(owner_private_key)
    body = _body(lease_id, owner, address_bytes(grantee), ids, prefix, expires_at, nonce)
    return decode_capability(body + sign_message(owner_private_key, _signed(body)))


def encode_capability(cap: Capability) -> bytes:
    owner, grantee = address_bytes(cap.owner), address_bytes(cap.grantee)
    body = _body(cap.lease_id, owner, grantee, cap.objects, cap.prefix, cap.expires_at, cap.nonce)
    return body + cap.signature


def decode_capability(data: bytes) -> Capability:
    """Parse the canonical bytes; anything malformed or oversized is ``Unauthenticated``.
    The signature is checked by ``verify_capability``, not here."""
    if not isinstance(data, bytes) or len(data) < _HEAD + 2 + SIGNATURE_BYTES:
        raise Unauthenticated("malformed capability: too short")
    if len(data) > MAX_CAPABILITY_BYTES or data[0] != CAPABILITY_VERSION:
        raise Unauthenticated("malformed capability: too long or unknown version")
    end, pos = len(data) - SIGNATURE_BYTES, _HEAD + 1
    objects: list[bytes] = []
    prefix: bytes | None = None
    count = 0
    if data[_HEAD] == _SCOPE_PREFIX:
        prefix, pos = data[pos + 1 : pos + 1 + data[pos]], pos + 1 + data[pos]
    elif data[_HEAD] == _SCOPE_OBJECTS:
        count, pos = int.from_bytes(data[pos : pos + 2], "big"), pos + 2
        for _ in range(min(count, MAX_OBJECTS + 1)):
            if pos >= end:
                break
            objects.append(data[pos + 1 : pos + 1 + data[pos]])
            pos += 1 + data[pos]
    else:
        raise Unauthenticated(f"malformed capability: unknown scope {data[_HEAD]}")
    if pos != end or len(objects) != count:
        raise Unauthenticated("malformed capability: bad scope or length")
    lease_id, owner, grantee = int.from_bytes(data[1:33], "big"), data[33:53], data[53:73]
    expires_at, nonce, ids = int.from_bytes(data[73:81], "big"), data[81:97], tuple(objects)
    try:
        if _body(lease_id, owner, grantee, ids, prefix, expires_at, nonce) != data[:end]:
            raise UsageError("non-canonical encoding")
    except UsageError as err:
        raise Unauthenticated(f"malformed capability: {err}") from None
    return Capability(
        LeaseId(lease_id),
        to_address(owner),
        to_address(grantee),
        ids,
        prefix,
        expires_at,
        nonce,
        data[end:],
    )


def capability_to_header(cap: Capability) -> str:
    """The compact text form for the ``X-Nuclux-Capability`` header."""
    return b64url_encode(encode_capability(cap))


def capability_from_header(value: str | None) -> Capability:
    if value is None:
        raise Unauthenticated("missing X-Nuclux-Capability header")
    data = b64url_decode(value, max_chars=MAX_CAPABILITY_CHARS, what="X-Nuclux-Capability")
    return decode_capability(data)


def verify_capability(
    cap: Capability,
    *,
    now: int,
    grantee: str,
    lease_id: int,
    lease_owner: str,
    object_id: bytes,
) -> None:
    """Allow ``grantee`` to read ``object_id`` of lease ``lease_id`` (whose consumer is
    ``lease_owner``) at ``now``: ``Unauthenticated`` for a bad signature, ``Forbidden`` when
    the capability does not grant exactly that."""
    data = encode_capability(cap)
    signer = recover_signer(_signed(data[:-SIGNATURE_BYTES]), cap.signature)
    if not hmac.compare_digest(signer, address_bytes(cap.owner)):
        raise Unauthenticated(f"capability signature is not by its owner {cap.owner}")
    if cap.lease_id != lease_id:
        raise Forbidden(f"the capability is for lease {cap.lease_id}, not lease {lease_id}")
    if address_bytes(cap.owner) != address_bytes(lease_owner):
        raise Forbidden(f"the capability is signed by {cap.owner}, not lease {lease_id}'s owner")
    if address_bytes(cap.grantee) != address_bytes(grantee):
        raise Forbidden(f"the capability was granted to {cap.grantee}, not to {grantee}")
    if now >= cap.expires_at:
        raise Forbidden(
            f"the capability expired at {cap.expires_at} (now {now}): ask for a new one"
        )
    if not cap.covers(object_id):
        raise Forbidden(f"the capability does not cover object {object_id.hex()}")
