"""Per-segment AES-256-GCM: the frozen construction, and every way of moving a segment fails."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from nuclux.core.segment import (
    FILE_ID_BYTES,
    MAX_SEGMENT_BYTES,
    MAX_SEGMENTS,
    TAG_BYTES,
    SegmentCipher,
    segment_aad,
    segment_count,
    segment_nonce,
    segment_span,
    segment_subkey,
)
from nuclux.errors import IntegrityError, UsageError

KEY = bytes(range(32))
FILE_A = b"A" * FILE_ID_BYTES
FILE_B = b"B" * FILE_ID_BYTES


def seal_file(cipher: SegmentCipher, data: bytes, segment_bytes: int) -> list[bytes]:
    count = segment_count(len(data), segment_bytes)
    out = []
    for i in range(count):
        start, stop = segment_span(len(data), segment_bytes, i)
        out.append(cipher.encrypt(i, data[start:stop], last=i == count - 1))
    return out


def open_file(cipher: SegmentCipher, sealed: list[bytes]) -> bytes:
    return b"".join(cipher.decrypt(i, s, last=i == len(sealed) - 1) for i, s in enumerate(sealed))


def test_construction_is_the_spec() -> None:
    """Rebuilt here from cryptography's HKDF and AESGCM, as docs/spec/shares.md states it."""
    subkey = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"nuclux/segment/v1" + FILE_A
    ).derive(KEY)
    assert segment_subkey(KEY, FILE_A) == subkey
    assert segment_nonce(5) == bytes(11) + b"\x05"
    aad = b"nuclux/segment/v1" + FILE_A + (5).to_bytes(8, "big") + b"\x01"
    assert segment_aad(FILE_A, 5, True) == aad
    expected = AESGCM(subkey).encrypt(bytes(11) + b"\x05", b"hello", aad)
    assert SegmentCipher(KEY, FILE_A).encrypt(5, b"hello", last=True) == expected


def test_golden_vector() -> None:
    """Pinned: key 00..1f, file id "A" * 32, segment 0 (last) of b"nuclux"."""
    assert segment_subkey(KEY, FILE_A).hex() == (
        "7c7287daf4d70705065fc40c98f93b685ff008db0a1bca540515440703a1a528"
    )
    sealed = SegmentCipher(KEY, FILE_A).encrypt(0, b"nuclux", last=True)
    assert sealed.hex() == "a59268b65b93a88559593ca997bb44af5391b3c9a6d2"


def test_segmentation() -> None:
    assert segment_count(0, 10) == 1
    assert segment_span(0, 10, 0) == (0, 0)
    assert segment_count(1, 10) == 1
    assert segment_count(10, 10) == 1
    assert segment_count(11, 10) == 2
    assert segment_span(11, 10, 1) == (10, 11)
    assert segment_span(20, 10, 1) == (10, 20)
    with pytest.raises(UsageError):
        segment_span(20, 10, 2)
    with pytest.raises(UsageError):
        segment_count(-1, 10)
    with pytest.raises(UsageError):
        segment_count(5, 0)
    with pytest.raises(UsageError):
        segment_count(5, MAX_SEGMENT_BYTES + 1)
    with pytest.raises(UsageError):
        segment_count(MAX_SEGMENTS * 2 + 1, 2)


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=200), st.integers(1, 40))
def test_round_trip(data: bytes, segment_bytes: int) -> None:
    cipher = SegmentCipher(KEY, FILE_A)
    sealed = seal_file(cipher, data, segment_bytes)
    assert all(len(s) <= segment_bytes + TAG_BYTES for s in sealed)
    assert open_file(cipher, sealed) == data


def test_into_variants_match_and_reuse_buffers() -> None:
    cipher = SegmentCipher(KEY, FILE_A)
    buf = bytearray(100 + TAG_BYTES)
    cipher.encrypt_into(3, b"x" * 100, buf, last=False)
    assert bytes(buf) == cipher.encrypt(3, b"x" * 100, last=False)
    out = bytearray(100)
    cipher.decrypt_into(3, bytes(buf), memoryview(out), last=False)
    assert out == b"x" * 100
    with pytest.raises(UsageError):
        cipher.encrypt_into(3, b"x" * 100, bytearray(100), last=False)
    with pytest.raises(UsageError):
        cipher.decrypt_into(3, bytes(buf), bytearray(99), last=False)


def test_failed_decrypt_into_leaves_no_plaintext() -> None:
    cipher = SegmentCipher(KEY, FILE_A)
    sealed = bytearray(cipher.encrypt(0, b"secret" * 10, last=True))
    sealed[-1] ^= 1
    out = bytearray(60)
    with pytest.raises(IntegrityError, match="segment 0"):
        cipher.decrypt_into(0, bytes(sealed), out, last=True)
    assert out == bytes(60)


def test_reordering_fails() -> None:
    cipher = SegmentCipher(KEY, FILE_A)
    sealed = seal_file(cipher, b"0123456789" * 3, 10)
    with pytest.raises(IntegrityError, match="segment 0 of file"):
        cipher.decrypt(0, sealed[1], last=False)
    with pytest.raises(IntegrityError, match="segment 1"):
        cipher.decrypt(1, sealed[0], last=False)


def test_swapping_between_files_fails_even_with_one_key() -> None:
    a, b = SegmentCipher(KEY, FILE_A), SegmentCipher(KEY, FILE_B)
    sealed = a.encrypt(0, b"data", last=True)
    assert b.encrypt(0, b"data", last=True) != sealed
    with pytest.raises(IntegrityError, match="segment 0 of file 4242"):
        b.decrypt(0, sealed, last=True)


def test_truncation_and_extension_fail() -> None:
    cipher = SegmentCipher(KEY, FILE_A)
    sealed = seal_file(cipher, b"x" * 25, 10)
    assert len(sealed) == 3
    with pytest.raises(IntegrityError, match="segment 1"):
        open_file(cipher, sealed[:2])  # the last segment dropped
    with pytest.raises(IntegrityError, match="segment 2"):
        cipher.decrypt(2, sealed[2], last=False)  # a segment claimed to follow the last


def test_any_flipped_bit_fails() -> None:
    cipher = SegmentCipher(KEY, FILE_A)
    sealed = cipher.encrypt(7, b"abc", last=False)
    for bit in range(len(sealed) * 8):
        bad = bytearray(sealed)
        bad[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(IntegrityError, match="segment 7"):
            cipher.decrypt(7, bytes(bad), last=False)
    with pytest.raises(IntegrityError):
        SegmentCipher(bytes(32), FILE_A).decrypt(7, sealed, last=False)
    with pytest.raises(IntegrityError, match="shorter than its tag"):
        cipher.decrypt(7, sealed[:15], last=False)
    with pytest.raises(IntegrityError, match="shorter than its tag"):
        cipher.decrypt_into(7, sealed[:15], bytearray(0), last=False)


def test_bad_arguments() -> None:
    with pytest.raises(UsageError):
        SegmentCipher(b"short", FILE_A)
    with pytest.raises(UsageError):
        SegmentCipher(KEY, b"short")
    cipher = SegmentCipher(KEY, FILE_A)
    assert cipher.file_id == FILE_A
    with pytest.raises(UsageError):
        cipher.encrypt(-1, b"x", last=True)
    with pytest.raises(UsageError):
        cipher.encrypt(MAX_SEGMENTS, b"x", last=True)
    with pytest.raises(UsageError):
        segment_aad(b"x", 0, True)
    with pytest.raises(UsageError):
        segment_aad(FILE_A, -1, True)
