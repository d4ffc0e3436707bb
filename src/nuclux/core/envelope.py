"""Key envelopes: a 32-byte file key sealed to one X25519 public key.

Theory of operation
-------------------
Every Nuclux file is encrypted under its own random 32-byte file key. Whoever may read the
file gets that key in an *envelope* sealed to their X25519 key (the owner's own, or a
recipient's as published in the on-chain KeyDirectory). Sealing is ECIES-style::

    shared    = X25519(ephemeral_private, recipient_public)          (all-zero refused)
    key|nonce = HKDF-SHA256(ikm=shared, salt=ephemeral_public || recipient_public,
                            info=lp(b"nuclux/envelope/v1") || lp(context), 44 bytes)
    envelope  = version u8 (=1) || ephemeral_public 32
                || AES-256-GCM(key, nonce, file_key, aad=version || ephemeral_public)  (48)

81 bytes in all (layout frozen by golden vectors, specified in ``docs/spec/manifest.md``).
The ephemeral key is used for one envelope only, so the derived AES key and nonce are never
reused. Both public keys are in the HKDF salt, so the envelope is bound to its recipient and
a copy of the ephemeral key that differs only in bits X25519 ignores still fails. ``context``
binds the envelope to what it unlocks (Nuclux passes the 36-byte reference: owner || file
id), so an envelope moved to another file does not open there.

Envelopes carry no recipient identifier: a manifest header is visible to every provider that
stores it, and naming recipients there would publish who shares with whom. A reader tries
its key against each envelope (X25519 costs ~25 µs). Nothing here draws randomness: the
ephemeral private key is an argument (32 fresh random bytes from the caller's Rng).
"""

from __future__ import annotations

from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from nuclux.errors import IntegrityError, UsageError

ENVELOPE_TAG: Final = b"nuclux/envelope/v1"
ENVELOPE_VERSION: Final = 1
FILE_KEY_BYTES: Final = 32
X25519_KEY_BYTES: Final = 32
TAG_BYTES: Final = 16
ENVELOPE_BYTES: Final = 1 + X25519_KEY_BYTES + FILE_KEY_BYTES + TAG_BYTES
MAX_CONTEXT_BYTES: Final = 256


def lp(data: bytes) -> bytes:
    """``len(data)`` as 2 bytes big-endian, then ``data``."""
    return len(data).to_bytes(2, "big") + data


def x25519_public(private_key: bytes) -> bytes:
    """The 32-byte X25519 public key of a 32-byte private key."""
    return _raw_public(_private(private_key).public_key())


def _private(private_key: bytes) -> X25519PrivateKey:
    if not isinstance(private_key, bytes) or len(private_key) != X25519_KEY_BYTES:
        raise UsageError("an X25519 private key is 32 bytes")
    return X25519PrivateKey.from_private_bytes(private_key)


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _derive(
    shared: bytes, ephemeral_public: bytes, recipient_public: bytes, context: bytes
) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(),
        length=32 + 12,
        salt=ephemeral_public + recipient_public,
        info=lp(ENVELOPE_TAG) + lp(context),
    )
    return hkdf.derive(shared)


def _check_context(context: bytes) -> None:
    if not isinstance(context, bytes) or len(context) > MAX_CONTEXT_BYTES:
        raise UsageError(f"an envelope context is at most {MAX_CONTEXT_BYTES} bytes")


def seal_key(
    file_key: bytes, *, recipient_public: bytes, ephemeral_private: bytes, context: bytes
) -> bytes:
    """Seal ``file_key`` (32 bytes) to ``recipient_public``: the 81-byte envelope.

    ``ephemeral_private`` must be 32 fresh random bytes, used for this envelope only."""
    if not isinstance(file_key, bytes) or len(file_key) != FILE_KEY_BYTES:
        raise UsageError("a file key is 32 bytes")
    if not isinstance(recipient_public, bytes) or len(recipient_public) != X25519_KEY_BYTES:
        raise UsageError("an X25519 public key is 32 bytes")
    _check_context(context)
    ephemeral = _private(ephemeral_private)
    ephemeral_public = _raw_public(ephemeral.public_key())
    try:
        shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient_public))
    except ValueError:
        raise UsageError(
            "the recipient's X25519 key is a low-order point: it is not a real public key"
        ) from None
    okm = _derive(shared, ephemeral_public, recipient_public, context)
    header = bytes([ENVELOPE_VERSION]) + ephemeral_public
    return header + AESGCM(okm[:32]).encrypt(okm[32:], file_key, header)


def open_key(envelope: bytes, *, recipient_private: bytes, context: bytes) -> bytes:
    """The file key inside ``envelope``. ``UsageError`` if it is not an 81-byte version-1
    envelope; ``IntegrityError`` if it does not open with this key and context (sealed to
    another key, for another file, or altered)."""
    if not isinstance(envelope, bytes) or len(envelope) != ENVELOPE_BYTES:
        raise UsageError(f"malformed key envelope: expected {ENVELOPE_BYTES} bytes")
    if envelope[0] != ENVELOPE_VERSION:
        raise UsageError(
            f"unknown key envelope version {envelope[0]}: this Nuclux reads version"
            f" {ENVELOPE_VERSION}; upgrade to read it"
        )
    _check_context(context)
    recipient = _private(recipient_private)
    recipient_public = _raw_public(recipient.public_key())
    ephemeral_public = envelope[1 : 1 + X25519_KEY_BYTES]
    try:
        shared = recipient.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
    except ValueError:
        raise IntegrityError(
            "key envelope refused: its ephemeral key is a low-order point"
        ) from None
    okm = _derive(shared, ephemeral_public, recipient_public, context)
    try:
        return AESGCM(okm[:32]).decrypt(
            okm[32:], envelope[1 + X25519_KEY_BYTES :], envelope[: 1 + X25519_KEY_BYTES]
        )
    except InvalidTag:
        raise IntegrityError(
            "key envelope does not open: it was sealed to another X25519 key (another account)"
            " or for another file, or it was altered"
        ) from None


def open_any(envelopes: tuple[bytes, ...], *, recipient_private: bytes, context: bytes) -> bytes:
    """The file key from the first of ``envelopes`` that opens with this key, or
    ``IntegrityError`` naming how many were tried."""
    for envelope in envelopes:
        try:
            return open_key(envelope, recipient_private=recipient_private, context=context)
        except IntegrityError:
            continue
    raise IntegrityError(
        f"none of the {len(envelopes)} key envelopes opens with this account's X25519 key:"
        " the file was not shared with this account (use the grant you were given), or the"
        " envelopes were altered"
    )
