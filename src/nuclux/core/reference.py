"""References, object ids, and the strict byte reader the storage formats share.

Theory of operation
-------------------
A **reference** names a file: its owner's address and the owner's 16-byte file id. It names
no version, so repair can publish manifest version n+1 (new providers, same data) and every
reference and grant already handed out still points at the file. Binary form (36 bytes)::

    owner 20 || file_id 16

Text form: ``nux:`` then 64 characters of RFC 4648 base32 (lowercase, no padding) of those
36 bytes followed by a 4-byte checksum, the first 4 bytes of
``sha256(lp(b"nuclux/reference/v1") || owner || file_id)``. Base32 survives case folding
(a reference read aloud, typed in capitals or put in a case-insensitive field still parses)
and 40 bytes encode to exactly 64 characters with no padding; the checksum catches typos
(a random change passes with probability 2^-32). Parsing is strict: any other length,
character or checksum is a ``UsageError`` saying what to fix.

**Object ids** (at most 64 bytes, what a provider stores under a lease) are ASCII and put
every object of a file under one prefix, so a single prefix capability per lease grants
exactly one file::

    f/<file id, 32 lowercase hex>/m        the file's latest manifest (replaced by repair)
    f/<file id, 32 lowercase hex>/s/<i>    share i (decimal 0-255, no leading zeros)
    i/<p>                                  page p of the owner's file index (decimal 0-65535)

The file id has a fixed length and ends in ``/``, so one file's prefix is never a prefix of
another file's objects. Future per-file objects (for instance a share's block-root list)
go under the same prefix, and existing grants cover them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from typing import Final, NamedTuple

from nuclux.core.auth import address_bytes, to_address
from nuclux.core.envelope import lp
from nuclux.core.types import Address
from nuclux.errors import UsageError

REFERENCE_TAG: Final = b"nuclux/reference/v1"
REFERENCE_PREFIX: Final = "nux:"
FILE_ID_BYTES: Final = 16
REFERENCE_BYTES: Final = 20 + FILE_ID_BYTES
CHECKSUM_BYTES: Final = 4
REFERENCE_CHARS: Final = len(REFERENCE_PREFIX) + (REFERENCE_BYTES + CHECKSUM_BYTES) * 8 // 5
MAX_SHARE_INDEX: Final = 255
MAX_INDEX_PAGE: Final = 65535
_BASE32 = re.compile(r"[a-z2-7]{64}")
_OBJECT_ID = re.compile(rb"f/([0-9a-f]{32})/(m|s/(0|[1-9][0-9]{0,2}))|i/(0|[1-9][0-9]{0,4})")


@dataclass(frozen=True, slots=True)
class Reference:
    """A file: its owner (EIP-55 address) and the owner's 16-byte file id."""

    owner: Address
    file_id: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.file_id, bytes) or len(self.file_id) != FILE_ID_BYTES:
            raise UsageError(f"a file id is {FILE_ID_BYTES} bytes")
        object.__setattr__(self, "owner", to_address(address_bytes(self.owner)))

    def to_bytes(self) -> bytes:
        """The 36-byte binary form: owner || file id (also the key-envelope context)."""
        return address_bytes(self.owner) + self.file_id

    @classmethod
    def from_bytes(cls, data: bytes) -> Reference:
        if not isinstance(data, bytes) or len(data) != REFERENCE_BYTES:
            raise UsageError(f"a binary reference is {REFERENCE_BYTES} bytes")
        return cls(to_address(data[:20]), data[20:])

    def __str__(self) -> str:
        return format_reference(self)


def _checksum(raw: bytes) -> bytes:
    return hashlib.sha256(lp(REFERENCE_TAG) + raw).digest()[:CHECKSUM_BYTES]


def format_reference(ref: Reference) -> str:
    """``nux:`` + 64 lowercase base32 characters."""
    raw = ref.to_bytes()
    return REFERENCE_PREFIX + base64.b32encode(raw + _checksum(raw)).decode("ascii").lower()


def parse_reference(text: str) -> Reference:
    """Parse the text form (any case, surrounding whitespace ignored)."""
    if not isinstance(text, str):
        raise UsageError("a reference is text: nux: followed by 64 base32 characters")
    t = text.strip().lower()
    if not t.startswith(REFERENCE_PREFIX):
        raise UsageError(f"not a Nuclux reference: it must start with {REFERENCE_PREFIX!r}")
    body = t[len(REFERENCE_PREFIX) :]
    if not _BASE32.fullmatch(body):
        raise UsageError(
            f"malformed reference: after {REFERENCE_PREFIX!r} come exactly 64 characters a-z"
            f" and 2-7 (got {len(body)} characters); was it cut off or mistyped?"
        )
    try:
        data = base64.b32decode(body.upper())
    except (binascii.Error, ValueError):  # pragma: no cover - the pattern admits only base32
        raise UsageError("malformed reference: bad base32") from None
    raw, checksum = data[:REFERENCE_BYTES], data[REFERENCE_BYTES:]
    if _checksum(raw) != checksum:
        raise UsageError("reference checksum does not match: a character is mistyped")
    return Reference.from_bytes(raw)


# -- object ids ---------------------------------------------------------------------------------


class ObjectName(NamedTuple):
    """A parsed object id: ``kind`` is "manifest", "share" or "index"."""

    kind: str
    file_id: bytes | None
    number: int | None  # share index or index page


def _file_id(file_id: bytes) -> bytes:
    if not isinstance(file_id, bytes) or len(file_id) != FILE_ID_BYTES:
        raise UsageError(f"a file id is {FILE_ID_BYTES} bytes")
    return file_id


def file_prefix(file_id: bytes) -> bytes:
    """``f/<hex>/``: the prefix of every object of this file (what a grant's capability covers)."""
    return b"f/" + _file_id(file_id).hex().encode("ascii") + b"/"


def manifest_object_id(file_id: bytes) -> bytes:
    return file_prefix(file_id) + b"m"


def share_object_id(file_id: bytes, index: int) -> bytes:
    if type(index) is not int or not 0 <= index <= MAX_SHARE_INDEX:
        raise UsageError(f"a share index is 0..{MAX_SHARE_INDEX}")
    return file_prefix(file_id) + b"s/" + str(index).encode("ascii")


def index_object_id(page: int) -> bytes:
    if type(page) is not int or not 0 <= page <= MAX_INDEX_PAGE:
        raise UsageError(f"a file index page is 0..{MAX_INDEX_PAGE}")
    return b"i/" + str(page).encode("ascii")


def parse_object_id(object_id: bytes) -> ObjectName:
    """Classify an object id of the scheme above; ``UsageError`` for anything else."""
    m = _OBJECT_ID.fullmatch(object_id) if isinstance(object_id, bytes) else None
    if m is None:
        raise UsageError(f"not a Nuclux object id: {object_id!r}")
    if m.group(4) is not None:
        page = int(m.group(4))
        if page > MAX_INDEX_PAGE:
            raise UsageError(f"file index page {page} out of range 0..{MAX_INDEX_PAGE}")
        return ObjectName("index", None, page)
    file_id = bytes.fromhex(m.group(1).decode("ascii"))
    if m.group(3) is None:
        return ObjectName("manifest", file_id, None)
    index = int(m.group(3))
    if index > MAX_SHARE_INDEX:
        raise UsageError(f"share index {index} out of range 0..{MAX_SHARE_INDEX}")
    return ObjectName("share", file_id, index)


# -- strict decoding ------------------------------------------------------------------------------


class Reader:
    """A cursor over bytes for strict decoders: every read is bounds-checked and a short
    read, or bytes left over at ``end()``, is a ``UsageError`` naming ``what``."""

    __slots__ = ("data", "pos", "what")

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def fail(self, reason: str) -> UsageError:
        return UsageError(f"malformed {self.what}: {reason}")

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise self.fail("truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint(self, n: int) -> int:
        return int.from_bytes(self.take(n), "big")

    def end(self) -> None:
        if self.pos != len(self.data):
            raise self.fail(f"{len(self.data) - self.pos} trailing bytes")
