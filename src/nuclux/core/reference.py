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
exactly one file (numbers decimal, no leading zeros)::

    f/<file id, 32 lowercase hex>/m          the file's latest manifest (replaced by repair)
    f/<file id, 32 lowercase hex>/s/<i>/<j>  block j (0 .. 2^32-1) of share i (0 .. 255)
    f/<file id, 32 lowercase hex>/t/<v>      the time-stamp proof of manifest version v (>= 1)
    i/<p>                                    page p of the owner's file index (0 .. 65535);
                                             i/0 is the head of a format 2 index
    i/p/<name hex>                           a format 2 index page (name: 16 bytes)

The file id has a fixed length and ends in ``/``, so one file's prefix is never a prefix of
another file's objects; likewise a share's prefix ``f/<fid>/s/<i>/`` covers exactly that
share's blocks. Future per-file objects go under the file's prefix, and existing grants
cover them. The longest id is 51 bytes.
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
MAX_BLOCK_INDEX: Final = 2**32 - 1  # a file has at most 2^32 segments (shares.md section 2.1)
MAX_MANIFEST_VERSION: Final = 2**32 - 1
MAX_INDEX_PAGE: Final = 65535
_BASE32 = re.compile(r"[a-z2-7]{64}")
_OBJECT_ID = re.compile(
    rb"f/([0-9a-f]{32})/(?:(m)|s/(0|[1-9][0-9]{0,2})/(0|[1-9][0-9]{0,9})|t/([1-9][0-9]{0,9}))"
    rb"|i/(0|[1-9][0-9]{0,4})|i/p/([0-9a-f]{32})"
)


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
    """A parsed object id: ``kind`` is "manifest", "block", "timestamp", "index" or
    "index page".

    ``number`` is the share index of a block, the manifest version of a time-stamp proof or
    the page of a format 1 index page (or the format 2 head, page 0); ``block`` the block
    index of a block (else None). ``file_id`` holds a format 2 index page's name."""

    kind: str
    file_id: bytes | None
    number: int | None
    block: int | None = None


def _file_id(file_id: bytes) -> bytes:
    if not isinstance(file_id, bytes) or len(file_id) != FILE_ID_BYTES:
        raise UsageError(f"a file id is {FILE_ID_BYTES} bytes")
    return file_id


def _bounded(value: int, low: int, high: int, what: str) -> int:
    if type(value) is not int or not low <= value <= high:
        raise UsageError(f"{what} is {low}..{high}")
    return value


def file_prefix(file_id: bytes) -> bytes:
    """``f/<hex>/``: the prefix of every object of this file (what a grant's capability covers)."""
    return b"f/" + _file_id(file_id).hex().encode("ascii") + b"/"


def manifest_object_id(file_id: bytes) -> bytes:
    return file_prefix(file_id) + b"m"


def share_prefix(file_id: bytes, index: int) -> bytes:
    """``f/<hex>/s/<i>/``: the prefix of every block of share ``index`` of this file."""
    i = _bounded(index, 0, MAX_SHARE_INDEX, "a share index")
    return file_prefix(file_id) + b"s/" + str(i).encode("ascii") + b"/"


def block_object_id(file_id: bytes, index: int, block: int) -> bytes:
    """``f/<hex>/s/<i>/<j>``: block ``block`` of share ``index`` (``shares.md`` section 4)."""
    j = _bounded(block, 0, MAX_BLOCK_INDEX, "a block index")
    return share_prefix(file_id, index) + str(j).encode("ascii")


def timestamp_object_id(file_id: bytes, version: int) -> bytes:
    """``f/<hex>/t/<v>``: the time-stamp proof of manifest version ``version``."""
    v = _bounded(version, 1, MAX_MANIFEST_VERSION, "a manifest version")
    return file_prefix(file_id) + b"t/" + str(v).encode("ascii")


def index_object_id(page: int) -> bytes:
    p = _bounded(page, 0, MAX_INDEX_PAGE, "a file index page")
    return b"i/" + str(p).encode("ascii")


def index_page_object_id(name: bytes) -> bytes:
    """``i/p/<hex>``: the file index page (format 2) named ``name`` (16 bytes)."""
    if not isinstance(name, bytes) or len(name) != 16:
        raise UsageError("a file index page name is 16 bytes")
    return b"i/p/" + name.hex().encode("ascii")


def parse_object_id(object_id: bytes) -> ObjectName:
    """Classify an object id of the scheme above; ``UsageError`` for anything else."""
    m = _OBJECT_ID.fullmatch(object_id) if isinstance(object_id, bytes) else None
    if m is None:
        raise UsageError(f"not a Nuclux object id: {object_id!r}")
    fid_hex, manifest, share, block, version, page, name = m.groups()
    if name is not None:
        return ObjectName("index page", bytes.fromhex(name.decode("ascii")), None)
    if page is not None:
        n = int(page)
        if n > MAX_INDEX_PAGE:
            raise UsageError(f"file index page {n} out of range 0..{MAX_INDEX_PAGE}")
        return ObjectName("index", None, n)
    file_id = bytes.fromhex(fid_hex.decode("ascii"))
    if manifest is not None:
        return ObjectName("manifest", file_id, None)
    if version is not None:
        v = int(version)
        if v > MAX_MANIFEST_VERSION:
            raise UsageError(f"manifest version {v} out of range 1..{MAX_MANIFEST_VERSION}")
        return ObjectName("timestamp", file_id, v)
    i, j = int(share), int(block)
    if i > MAX_SHARE_INDEX:
        raise UsageError(f"share index {i} out of range 0..{MAX_SHARE_INDEX}")
    if j > MAX_BLOCK_INDEX:
        raise UsageError(f"block index {j} out of range 0..{MAX_BLOCK_INDEX}")
    return ObjectName("block", file_id, i, j)


def parse_block_id(object_id: bytes) -> tuple[bytes, int, int] | None:
    """``(file id, share index, block index)`` if ``object_id`` names a share block, else
    None (any other id, Nuclux or not). What a node uses to spot blocks as they arrive."""
    if not object_id.startswith(b"f/") or b"/s/" not in object_id:
        return None  # the common case of a plain object: no regular expression
    try:
        name = parse_object_id(object_id)
    except UsageError:
        return None
    fid, i, j = name.file_id, name.number, name.block
    if name.kind != "block" or fid is None or i is None or j is None:
        return None
    return fid, i, j


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
