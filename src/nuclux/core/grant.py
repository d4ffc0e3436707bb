"""Access grants: what ``share --to ADDRESS`` hands over, letting one address read one file.

Theory of operation
-------------------
A grant gives its grantee exactly two things: the file key, sealed to the grantee's X25519
key (as published in the KeyDirectory), and, for every lease that holds the file, an
owner-signed read capability (``nuclux.core.capability``) that providers check. Each
capability's scope is the prefix ``f/<file id hex>/`` (``nuclux.core.reference``): the file's
shares and its manifest on that lease, every manifest version included, and nothing else.
The owner signs the grant as a whole as well, binding the envelope and the manifest version
current when the grant was made (the grantee refuses older manifests: a provider cannot
roll it back). Byte layout (integers big-endian; ``docs/spec/manifest.md``)::

    version u8 = 1 | owner 20 | file_id 16 | grantee 20 | expires_at u64
    | manifest_version u32 (1..) | nonce 16 | envelope 81
    | lease count u8 (1..64) | per lease, ids strictly increasing:
                                 lease_id 32 || that capability's signature 65
    | signature 65 over sha256(lp(b"nuclux/grant/v1") || all of the above)

The capabilities share owner, grantee, expiry, nonce and scope, so only their lease ids and
signatures are stored; decoding rebuilds each and checks its signature, so a decoded grant
holds capabilities a node will accept. Text form: ``nuxgrant1`` + unpadded base64url.

Limits: expiry ends what providers serve, not what the grantee knows; a grantee that kept the
file key or a copy keeps them. Repair that moves a share to a new lease needs a capability
for that lease: ``issue_grant`` again (the grantee still reads from the other leases, any k
of n suffice). Nothing here reads a clock or draws randomness: ``now``, the nonce and the
envelope's ephemeral key are arguments.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Final

from nuclux.core.auth import (
    SIGNATURE_BYTES,
    address_bytes,
    b64url_decode,
    b64url_encode,
    owner_signed_part,
    recover_signer,
    sign_message,
    signer_of,
    to_address,
)
from nuclux.core.capability import CAPABILITY_TAG, Capability, encode_capability
from nuclux.core.envelope import ENVELOPE_BYTES, lp, open_key, seal_key
from nuclux.core.manifest import MAX_SHARES, MAX_VERSION
from nuclux.core.reference import FILE_ID_BYTES, Reader, Reference, file_prefix
from nuclux.core.types import Address, LeaseId
from nuclux.errors import Forbidden, IntegrityError, Unauthenticated, UsageError

GRANT_TAG: Final = b"nuclux/grant/v1"
GRANT_VERSION: Final = 1
GRANT_PREFIX: Final = "nuxgrant1"
NONCE_BYTES: Final = 16
_HEAD: Final = 1 + 20 + FILE_ID_BYTES + 20 + 8 + 4 + NONCE_BYTES + ENVELOPE_BYTES + 1
_LEASE_BYTES: Final = 32 + SIGNATURE_BYTES
MAX_GRANT_BYTES: Final = _HEAD + MAX_SHARES * _LEASE_BYTES + SIGNATURE_BYTES
MAX_GRANT_CHARS: Final = len(GRANT_PREFIX) + -(-MAX_GRANT_BYTES * 4 // 3)
_MIN_GRANT_BYTES: Final = _HEAD + _LEASE_BYTES + SIGNATURE_BYTES


@dataclass(frozen=True, slots=True)
class Grant:
    """A decoded grant: owner-signed, its capabilities checked (one per lease, sorted)."""

    reference: Reference
    grantee: Address
    expires_at: int
    manifest_version: int
    nonce: bytes
    envelope: bytes
    capabilities: tuple[Capability, ...]
    signature: bytes = field(repr=False)

    @property
    def lease_ids(self) -> tuple[LeaseId, ...]:
        return tuple(c.lease_id for c in self.capabilities)

    def capability_for(self, lease_id: int) -> Capability:
        """The capability to present to the provider of ``lease_id``."""
        for cap in self.capabilities:
            if cap.lease_id == lease_id:
                return cap
        raise Forbidden(f"the grant for {self.reference} holds no capability for lease {lease_id}")


def _capability(
    reference: Reference, grantee: bytes, expires_at: int, nonce: bytes, lease_id: int, sig: bytes
) -> Capability:
    return Capability(
        LeaseId(lease_id),
        reference.owner,
        to_address(grantee),
        (),
        file_prefix(reference.file_id),
        expires_at,
        nonce,
        sig,
    )


def _unsigned(g: Grant) -> bytes:
    """Everything but the grant's own signature, validated."""
    _u(g.expires_at, 0, 2**64 - 1, "expires_at")
    _u(g.manifest_version, 1, MAX_VERSION, "manifest version")
    if not isinstance(g.nonce, bytes) or len(g.nonce) != NONCE_BYTES:
        raise UsageError(f"a grant nonce is {NONCE_BYTES} bytes")
    if not isinstance(g.envelope, bytes) or len(g.envelope) != ENVELOPE_BYTES:
        raise UsageError(f"a key envelope is {ENVELOPE_BYTES} bytes")
    if not 1 <= len(g.capabilities) <= MAX_SHARES:
        raise UsageError(f"a grant covers 1 to {MAX_SHARES} leases")
    out = [
        bytes([GRANT_VERSION]),
        g.reference.to_bytes(),
        address_bytes(g.grantee),
        g.expires_at.to_bytes(8, "big"),
        g.manifest_version.to_bytes(4, "big"),
        g.nonce,
        g.envelope,
        bytes([len(g.capabilities)]),
    ]
    for i, cap in enumerate(g.capabilities):
        lease = _u(cap.lease_id, 1, 2**256 - 1, "lease id")
        if i and g.capabilities[i - 1].lease_id >= lease:
            raise UsageError("grant lease ids must be sorted and unique")
        grantee = address_bytes(g.grantee)
        if cap != _capability(g.reference, grantee, g.expires_at, g.nonce, lease, cap.signature):
            raise UsageError("a grant's capabilities must match its owner, grantee and expiry")
        if len(cap.signature) != SIGNATURE_BYTES:
            raise UsageError("a capability signature is 65 bytes")
        out += [lease.to_bytes(32, "big"), cap.signature]
    return b"".join(out)


def _u(value: object, lo: int, hi: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        top = "2**256-1" if hi == 2**256 - 1 else str(hi)
        raise UsageError(f"{what} must be an integer in {lo}..{top}, got {value!r}")
    return value


def _signed(unsigned: bytes) -> bytes:
    return lp(GRANT_TAG) + unsigned


def issue_grant(
    owner_private_key: bytes,
    *,
    file_id: bytes,
    grantee: str,
    grantee_x25519_public: bytes,
    file_key: bytes,
    ephemeral_private: bytes,
    lease_ids: list[int] | tuple[int, ...],
    manifest_version: int,
    expires_at: int,
    nonce: bytes,
) -> Grant:
    """Let ``grantee`` read file ``file_id`` (stored under ``lease_ids``) until ``expires_at``.

    ``grantee_x25519_public`` comes from the KeyDirectory; ``ephemeral_private`` and ``nonce``
    must be fresh random bytes (32 and 16)."""
    owner = signer_of(owner_private_key)
    reference = Reference(to_address(owner), file_id)
    grantee_raw = address_bytes(grantee)
    envelope = seal_key(
        file_key,
        recipient_public=grantee_x25519_public,
        ephemeral_private=ephemeral_private,
        context=reference.to_bytes(),
    )
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
        raise UsageError(f"a grant nonce is {NONCE_BYTES} bytes")
    _u(expires_at, 0, 2**64 - 1, "expires_at")
    caps = []
    for lease in sorted(set(lease_ids)):
        _u(lease, 1, 2**256 - 1, "lease id")
        draft = _capability(reference, grantee_raw, expires_at, nonce, lease, b"")
        message = lp(CAPABILITY_TAG) + encode_capability(draft)
        caps.append(
            _capability(
                reference,
                grantee_raw,
                expires_at,
                nonce,
                lease,
                sign_message(owner_private_key, message),
            )
        )
    draft_grant = Grant(
        reference,
        to_address(grantee_raw),
        expires_at,
        manifest_version,
        nonce,
        envelope,
        tuple(caps),
        b"",
    )
    unsigned = _unsigned(draft_grant)
    return decode_grant(unsigned + sign_message(owner_private_key, _signed(unsigned)))


def encode_grant(grant: Grant) -> bytes:
    return _unsigned(grant) + grant.signature


def decode_grant(data: bytes) -> Grant:
    """Check the owner's signature over the grant and over each capability, then parse.
    ``IntegrityError`` for anything altered; ``UsageError`` if malformed."""
    if not isinstance(data, bytes) or not _MIN_GRANT_BYTES <= len(data) <= MAX_GRANT_BYTES:
        raise UsageError(f"malformed grant: expected {_MIN_GRANT_BYTES}..{MAX_GRANT_BYTES} bytes")
    if data[0] != GRANT_VERSION:
        raise UsageError(
            f"unknown grant version {data[0]}: this Nuclux reads version {GRANT_VERSION};"
            " upgrade to use it"
        )
    unsigned = owner_signed_part(data, lp(GRANT_TAG), "grant", "the file's owner")
    owner, signature = data[1:21], data[-SIGNATURE_BYTES:]
    r = Reader(unsigned, "grant")
    r.take(1)
    reference = Reference.from_bytes(r.take(20 + FILE_ID_BYTES))
    grantee, expires_at, version = r.take(20), r.uint(8), r.uint(4)
    nonce, envelope = r.take(NONCE_BYTES), r.take(ENVELOPE_BYTES)
    count = r.uint(1)
    if count > MAX_SHARES:
        raise r.fail(f"{count} leases (at most {MAX_SHARES})")
    caps = tuple(
        _capability(reference, grantee, expires_at, nonce, r.uint(32), r.take(SIGNATURE_BYTES))
        for _ in range(count)
    )
    r.end()
    grant = Grant(
        reference, to_address(grantee), expires_at, version, nonce, envelope, caps, signature
    )
    try:
        canonical = encode_grant(grant) == data
    except UsageError as err:
        raise r.fail(str(err)) from None
    if not canonical:  # pragma: no cover - every field above has exactly one encoding
        raise r.fail("non-canonical encoding")
    for cap in caps:
        message = lp(CAPABILITY_TAG) + encode_capability(cap)[:-SIGNATURE_BYTES]
        try:
            signer = recover_signer(message, cap.signature)
        except Unauthenticated as err:
            raise IntegrityError(
                f"grant refused: capability for lease {cap.lease_id}: {err}"
            ) from None
        if not hmac.compare_digest(signer, owner):
            raise IntegrityError(
                f"grant refused: its capability for lease {cap.lease_id} is not signed by the owner"
            )
    return grant


def grant_to_text(grant: Grant) -> str:
    """``nuxgrant1`` + unpadded base64url: safe in a shell, a URL or a chat message."""
    return GRANT_PREFIX + b64url_encode(encode_grant(grant))


def grant_from_text(text: str) -> Grant:
    """Parse the text form (surrounding whitespace ignored)."""
    if not isinstance(text, str):
        raise UsageError("a grant is text starting with nuxgrant1")
    t = text.strip()
    if not t.startswith(GRANT_PREFIX):
        raise UsageError(f"not a Nuclux grant: it must start with {GRANT_PREFIX!r}")
    try:
        data = b64url_decode(
            t[len(GRANT_PREFIX) :], max_chars=MAX_GRANT_CHARS - len(GRANT_PREFIX), what="grant"
        )
    except Unauthenticated as err:
        raise UsageError(f"{err} (was it cut off or altered when copied?)") from None
    return decode_grant(data)


def open_grant(grant: Grant, *, me: str, x25519_private: bytes, now: int) -> bytes:
    """The file key, for the grantee ``me`` holding ``x25519_private``, before expiry.

    ``Forbidden`` if the grant is for another address or has expired; ``IntegrityError`` if
    the envelope does not open with this key (the grantee's published key changed since)."""
    if not hmac.compare_digest(address_bytes(grant.grantee), address_bytes(me)):
        raise Forbidden(
            f"this grant is for {grant.grantee}, not for {to_address(address_bytes(me))}:"
            " ask the owner to share the file with your address"
        )
    if now >= grant.expires_at:
        raise Forbidden(
            f"the grant for {grant.reference} expired at {grant.expires_at} (now {now}):"
            " ask the owner for a new one"
        )
    return open_key(
        grant.envelope, recipient_private=x25519_private, context=grant.reference.to_bytes()
    )
