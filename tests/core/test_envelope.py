"""Key envelopes: the golden vector (recomputed from the spec), round trips, wrong keys and
contexts, every flipped byte, malformed and low-order inputs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given
from hypothesis import strategies as st

from nuclux.core.envelope import (
    ENVELOPE_BYTES,
    MAX_CONTEXT_BYTES,
    open_any,
    open_key,
    seal_key,
    x25519_public,
)
from nuclux.errors import IntegrityError, UsageError

VECTOR = json.loads((Path(__file__).parent / "vectors" / "envelope.json").read_text())
FILE_KEY = bytes.fromhex(VECTOR["file_key"])
BOB = bytes.fromhex(VECTOR["recipient_private"])
ALICE = bytes.fromhex(VECTOR["ephemeral_private"])
CONTEXT = bytes.fromhex(VECTOR["context"])
ENVELOPE = bytes.fromhex(VECTOR["envelope"])
MALLORY = hashlib.sha256(b"nuclux-test/mallory-x25519").digest()
# A point of order 8 on Curve25519 (RFC 7748 errata / libsodium's blocklist).
LOW_ORDER = bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800")


def seal(
    *,
    file_key: bytes = FILE_KEY,
    recipient_public: bytes | None = None,
    ephemeral_private: bytes = ALICE,
    context: bytes = CONTEXT,
) -> bytes:
    public = x25519_public(BOB) if recipient_public is None else recipient_public
    return seal_key(
        file_key, recipient_public=public, ephemeral_private=ephemeral_private, context=context
    )


def test_golden_vector() -> None:
    assert len(ENVELOPE) == ENVELOPE_BYTES == 81
    assert x25519_public(BOB).hex() == VECTOR["recipient_public"]
    assert x25519_public(ALICE).hex() == VECTOR["ephemeral_public"]
    assert seal() == ENVELOPE
    assert open_key(ENVELOPE, recipient_private=BOB, context=CONTEXT) == FILE_KEY


def test_vector_follows_the_spec() -> None:
    """Open the vector with the primitives alone, step by step as docs/spec/manifest.md says."""
    eph_pub, bob_pub = ENVELOPE[1:33], x25519_public(BOB)
    shared = X25519PrivateKey.from_private_bytes(BOB).exchange(
        X25519PublicKey.from_public_bytes(eph_pub)
    )
    assert shared.hex() == VECTOR["shared_secret"]  # RFC 7748 section 6.1
    tag = b"nuclux/envelope/v1"
    info = len(tag).to_bytes(2, "big") + tag + len(CONTEXT).to_bytes(2, "big") + CONTEXT
    assert info.hex() == VECTOR["hkdf_info"]
    okm = HKDF(algorithm=hashes.SHA256(), length=44, salt=eph_pub + bob_pub, info=info).derive(
        shared
    )
    assert okm[:32].hex() == VECTOR["aes_key"]
    assert okm[32:].hex() == VECTOR["nonce"]
    assert ENVELOPE[0] == 1
    assert AESGCM(okm[:32]).decrypt(okm[32:], ENVELOPE[33:], ENVELOPE[:33]) == FILE_KEY


@given(
    file_key=st.binary(min_size=32, max_size=32),
    recipient=st.binary(min_size=32, max_size=32),
    ephemeral=st.binary(min_size=32, max_size=32),
    context=st.binary(max_size=MAX_CONTEXT_BYTES),
)
def test_round_trip(file_key: bytes, recipient: bytes, ephemeral: bytes, context: bytes) -> None:
    envelope = seal_key(
        file_key,
        recipient_public=x25519_public(recipient),
        ephemeral_private=ephemeral,
        context=context,
    )
    assert len(envelope) == ENVELOPE_BYTES
    assert open_key(envelope, recipient_private=recipient, context=context) == file_key


def test_wrong_key_or_context_is_refused() -> None:
    with pytest.raises(IntegrityError, match="another X25519 key"):
        open_key(ENVELOPE, recipient_private=MALLORY, context=CONTEXT)
    with pytest.raises(IntegrityError, match="another file"):
        open_key(ENVELOPE, recipient_private=BOB, context=CONTEXT[:-1] + b"\x00")
    with pytest.raises(IntegrityError):
        open_key(ENVELOPE, recipient_private=ALICE, context=CONTEXT)  # the sender cannot open


def test_every_flipped_byte_is_refused() -> None:
    for position in range(len(ENVELOPE)):
        for mask in (0x01, 0x80, 0xFF):
            data = bytearray(ENVELOPE)
            data[position] ^= mask
            error = UsageError if position == 0 else IntegrityError
            with pytest.raises(error):
                open_key(bytes(data), recipient_private=BOB, context=CONTEXT)


def test_bit_that_x25519_ignores_still_breaks_the_envelope() -> None:
    """X25519 masks the top bit of a public key, so the shared secret is unchanged; the
    envelope still fails because both public keys are in the HKDF salt and the AAD."""
    data = bytearray(ENVELOPE)
    data[32] ^= 0x80
    eph = X25519PublicKey.from_public_bytes(bytes(data[1:33]))
    same = X25519PrivateKey.from_private_bytes(BOB).exchange(eph)
    assert same.hex() == VECTOR["shared_secret"]
    with pytest.raises(IntegrityError):
        open_key(bytes(data), recipient_private=BOB, context=CONTEXT)


def test_malformed_envelopes_are_usage_errors() -> None:
    for data in (b"", ENVELOPE[:-1], ENVELOPE + b"\x00", b"\x02" + ENVELOPE[1:]):
        with pytest.raises(UsageError):
            open_key(data, recipient_private=BOB, context=CONTEXT)
    with pytest.raises(UsageError, match="unknown key envelope version 2"):
        open_key(b"\x02" + ENVELOPE[1:], recipient_private=BOB, context=CONTEXT)


def test_low_order_keys() -> None:
    with pytest.raises(UsageError, match="low-order"):
        seal(recipient_public=LOW_ORDER)
    with pytest.raises(UsageError, match="low-order"):
        seal(recipient_public=bytes(32))
    forged = b"\x01" + LOW_ORDER + ENVELOPE[33:]
    with pytest.raises(IntegrityError, match="low-order"):
        open_key(forged, recipient_private=BOB, context=CONTEXT)


def test_bad_arguments() -> None:
    with pytest.raises(UsageError, match="file key"):
        seal(file_key=FILE_KEY[:31])
    with pytest.raises(UsageError, match="public key"):
        seal(recipient_public=b"\x09" * 31)
    with pytest.raises(UsageError, match="private key"):
        seal(ephemeral_private=b"\x01" * 33)
    with pytest.raises(UsageError, match="context"):
        seal(context=b"x" * (MAX_CONTEXT_BYTES + 1))
    with pytest.raises(UsageError):
        open_key(ENVELOPE, recipient_private=BOB[:31], context=CONTEXT)
    with pytest.raises(UsageError):
        x25519_public(b"short")


def test_open_any() -> None:
    other = seal(recipient_public=x25519_public(MALLORY))
    assert open_any((other, ENVELOPE), recipient_private=BOB, context=CONTEXT) == FILE_KEY
    assert open_any((other, ENVELOPE), recipient_private=MALLORY, context=CONTEXT) == FILE_KEY
    with pytest.raises(IntegrityError, match="none of the 1 key envelopes"):
        open_any((other,), recipient_private=BOB, context=CONTEXT)
    with pytest.raises(IntegrityError, match="none of the 0"):
        open_any((), recipient_private=BOB, context=CONTEXT)
