"""Per-segment AES-256-GCM: a file is encrypted in independently checkable segments.

Theory of operation
-------------------
A file of ``size`` bytes is cut into ``segment_count = max(1, ceil(size / segment_bytes))``
segments of ``segment_bytes`` plaintext; the last one holds the rest (1 to ``segment_bytes``
bytes, or 0 for the empty file, which is one empty segment so that emptiness is
authenticated too). Each segment is sealed on its own, so a download can check and release
data one segment at a time in bounded memory, and a damaged segment names itself.

Keys: the caller passes a random 32-byte file key (the one enveloped to readers) and a
32-byte file id that is fresh for every upload, new versions included. Segments are sealed
under a subkey bound to both (byte-exact in ``docs/spec/shares.md``)::

    subkey = HKDF-SHA256(IKM = file_key, salt = none, info = SEGMENT_TAG || file_id, L = 32)
    nonce  = segment index as 12 bytes big-endian
    aad    = SEGMENT_TAG || file_id || index as u64 big-endian || last (0x01 or 0x00)
    sealed = AES-256-GCM(subkey, nonce, plaintext, aad) = ciphertext || 16-byte tag

with ``SEGMENT_TAG = b"nuclux/segment/v1"``. The subkey makes (key, file id) pairs, not keys
alone, the unit of nonce uniqueness: a key reused by mistake for another file id (for example
a new version) still never repeats a (key, nonce) pair, and a segment moved between files fails
even if they share a key. The index in the nonce and the AAD makes reordering fail; the last
flag makes truncation fail (the new final segment was sealed with ``last = 0``) and so does
extension. What is not bound here, the file's size and layout, comes from the owner-signed
manifest, which the reader checks first.

Buffers: ``encrypt_into``/``decrypt_into`` write into a caller's buffer (the fastest path:
fresh multi-megabyte allocations cost page faults); ``encrypt``/``decrypt`` allocate.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nuclux.errors import IntegrityError, UsageError

SEGMENT_TAG: Final = b"nuclux/segment/v1"
KEY_BYTES: Final = 32
FILE_ID_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
MAX_SEGMENTS: Final = 2**32
MAX_SEGMENT_BYTES: Final = 64 << 20  # bounds one segment's memory; defaults are ~4 MiB

Buffer = bytes | bytearray | memoryview


def segment_count(size: int, segment_bytes: int) -> int:
    """How many segments a file of ``size`` bytes has (one for the empty file)."""
    _check_segment_bytes(segment_bytes)
    if size < 0:
        raise UsageError("a file size cannot be negative")
    count = max(1, -(-size // segment_bytes))
    if count > MAX_SEGMENTS:
        raise UsageError(f"a file has at most {MAX_SEGMENTS} segments of {segment_bytes} bytes")
    return count


def segment_span(size: int, segment_bytes: int, index: int) -> tuple[int, int]:
    """The plaintext byte range ``[start, stop)`` of segment ``index``."""
    count = segment_count(size, segment_bytes)
    if not 0 <= index < count:
        raise UsageError(f"no segment {index}: the file has {count}")
    start = index * segment_bytes
    return start, min(size, start + segment_bytes)


def _check_segment_bytes(segment_bytes: int) -> None:
    if not 0 < segment_bytes <= MAX_SEGMENT_BYTES:
        raise UsageError(f"a segment holds 1 to {MAX_SEGMENT_BYTES} bytes, not {segment_bytes}")


def segment_subkey(key: bytes, file_id: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) of the file key with ``SEGMENT_TAG || file_id`` as info."""
    if len(key) != KEY_BYTES:
        raise UsageError(f"a file key is {KEY_BYTES} bytes, not {len(key)}")
    if len(file_id) != FILE_ID_BYTES:
        raise UsageError(f"a file id is {FILE_ID_BYTES} bytes, not {len(file_id)}")
    prk = hmac.digest(bytes(32), key, hashlib.sha256)  # extract, salt = 32 zero bytes
    return hmac.digest(prk, SEGMENT_TAG + file_id + b"\x01", hashlib.sha256)  # expand, L = 32


def segment_nonce(index: int) -> bytes:
    """The 12-byte GCM nonce of segment ``index``."""
    if not 0 <= index < MAX_SEGMENTS:
        raise UsageError(f"a segment index is 0 to {MAX_SEGMENTS - 1}, not {index}")
    return index.to_bytes(NONCE_BYTES, "big")


def segment_aad(file_id: bytes, index: int, last: bool) -> bytes:
    """The associated data of segment ``index`` of file ``file_id``."""
    if len(file_id) != FILE_ID_BYTES:
        raise UsageError(f"a file id is {FILE_ID_BYTES} bytes, not {len(file_id)}")
    if not 0 <= index < MAX_SEGMENTS:
        raise UsageError(f"a segment index is 0 to {MAX_SEGMENTS - 1}, not {index}")
    return SEGMENT_TAG + file_id + index.to_bytes(8, "big") + (b"\x01" if last else b"\x00")


class SegmentCipher:
    """Seals and opens the segments of one file (one key, one file id)."""

    __slots__ = ("_aead", "_file_id")

    def __init__(self, key: bytes, file_id: bytes) -> None:
        self._aead = AESGCM(segment_subkey(bytes(key), bytes(file_id)))
        self._file_id = bytes(file_id)

    @property
    def file_id(self) -> bytes:
        return self._file_id

    def _params(self, index: int, last: bool, size: int) -> tuple[bytes, bytes]:
        if size > MAX_SEGMENT_BYTES + TAG_BYTES:
            raise UsageError(f"a segment holds at most {MAX_SEGMENT_BYTES} bytes")
        return segment_nonce(index), segment_aad(self._file_id, index, last)

    def encrypt(self, index: int, plaintext: Buffer, *, last: bool) -> bytes:
        """Segment ``index``'s plaintext sealed: ciphertext || tag, 16 bytes longer."""
        nonce, aad = self._params(index, last, len(plaintext))
        return self._aead.encrypt(nonce, plaintext, aad)

    def encrypt_into(
        self, index: int, plaintext: Buffer, out: bytearray | memoryview, *, last: bool
    ) -> None:
        """Like ``encrypt``, writing into ``out`` (exactly ``len(plaintext) + 16`` bytes)."""
        nonce, aad = self._params(index, last, len(plaintext))
        if len(out) != len(plaintext) + TAG_BYTES:
            raise UsageError(f"the output buffer must be {len(plaintext) + TAG_BYTES} bytes")
        self._aead.encrypt_into(nonce, plaintext, aad, out)

    def decrypt(self, index: int, sealed: Buffer, *, last: bool) -> bytes:
        """Open segment ``index``; ``IntegrityError`` if it was altered, moved or cut."""
        nonce, aad = self._params(index, last, len(sealed))
        if len(sealed) < TAG_BYTES:
            raise self._failed(index, "shorter than its tag")
        try:
            return self._aead.decrypt(nonce, sealed, aad)
        except InvalidTag:
            raise self._failed(index, "authentication failed") from None

    def decrypt_into(
        self, index: int, sealed: Buffer, out: bytearray | memoryview, *, last: bool
    ) -> None:
        """Like ``decrypt``, writing into ``out`` (exactly ``len(sealed) - 16`` bytes). GCM
        decrypts before it checks the tag, so on failure ``out`` is zeroed: unauthenticated
        plaintext never leaves."""
        nonce, aad = self._params(index, last, len(sealed))
        if len(sealed) < TAG_BYTES:
            raise self._failed(index, "shorter than its tag")
        if len(out) != len(sealed) - TAG_BYTES:
            raise UsageError(f"the output buffer must be {len(sealed) - TAG_BYTES} bytes")
        try:
            self._aead.decrypt_into(nonce, sealed, aad, out)
        except InvalidTag:
            memoryview(out).cast("B")[:] = bytes(len(out))
            raise self._failed(index, "authentication failed") from None

    def _failed(self, index: int, why: str) -> IntegrityError:
        return IntegrityError(
            f"segment {index} of file {self._file_id.hex()[:16]}: {why} (altered, truncated, "
            "reordered or from another file, or the wrong key)"
        )
