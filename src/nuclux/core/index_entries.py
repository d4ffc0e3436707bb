"""The entries of the account's file index: one page's plaintext, encoded and decoded.

Theory of operation
-------------------
A page of the file index (``nuclux.core.file_index``) seals a list of entries, one per file,
sorted by file id. Byte layout (integers big-endian; ``docs/spec/manifest.md`` section 6)::

    entries = count u16 (0..1024), then per entry, file ids strictly increasing:
              file_id 16 | size u64 | created_at u64 | manifest_version u32 (1..)
              | healthy u8 (shares last seen healthy, 0..64; 255 = not checked)
              | locator count u8 (1..4), lease ids 32 each (where the manifest is kept)
              | name: len u8 || UTF-8 (at most 255 bytes, no control characters)

Every field has exactly one encoding (fixed widths, a length-prefixed strict UTF-8 name), so
a page that decodes within the bounds the encoder enforces is canonical: decoding checks each
bound where it reads the field, which ``test_file_index`` holds against re-encoding. An entry
is at most ``MAX_ENTRY_BYTES`` (422) bytes and at least ``MIN_ENTRY_BYTES`` (71).

Speed: an account of 26,000 files is about 63 pages, each encoded when a write changes it
and all decoded on a full read, so the fixed part of an entry is one ``struct`` call each
way (about 2 and 3 us per entry here, against 6 and 9-16 with a call per field and a decoder
that re-encoded).
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from nuclux.core.manifest import MAX_SHARES, MAX_VERSION, check_name, encode_name, lp1
from nuclux.core.reference import FILE_ID_BYTES
from nuclux.core.types import LeaseId
from nuclux.errors import UsageError

MAX_ENTRIES: Final = 1024
MAX_LOCATORS: Final = 4
NOT_CHECKED: Final = 255
_FIXED = struct.Struct(">16sQQIBB")  # file id, size, created_at, version, healthy, locators
_FIXED_BYTES: Final = _FIXED.size
_LEASE_MAX: Final = 2**256 - 1
MIN_ENTRY_BYTES: Final = _FIXED_BYTES + 32 + 1
MAX_ENTRY_BYTES: Final = _FIXED_BYTES + MAX_LOCATORS * 32 + 1 + 255


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One of the account's files, as ``nuclux ls`` shows it."""

    file_id: bytes
    name: str
    size: int
    created_at: int
    manifest_version: int
    locators: tuple[LeaseId, ...]
    healthy_shares: int | None = None


def _u(value: object, lo: int, hi: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        top = "2**256-1" if hi == 2**256 - 1 else str(hi)
        raise UsageError(f"{what} must be an integer in {lo}..{top}, got {value!r}")
    return value


def encode_entry(e: IndexEntry) -> bytes:
    """One entry's bytes (without the page's count); ``UsageError`` beyond the bounds."""
    if not isinstance(e.file_id, bytes) or len(e.file_id) != FILE_ID_BYTES:
        raise UsageError(f"a file id is {FILE_ID_BYTES} bytes")
    healthy = NOT_CHECKED
    if e.healthy_shares is not None:
        healthy = _u(e.healthy_shares, 0, MAX_SHARES, "healthy shares (None: not checked)")
    _u(len(e.locators), 1, MAX_LOCATORS, "number of manifest locators")
    name = encode_name(e.name)
    fixed = _FIXED.pack(
        e.file_id,
        _u(e.size, 0, 2**64 - 1, "size"),
        _u(e.created_at, 0, 2**64 - 1, "created_at"),
        _u(e.manifest_version, 1, MAX_VERSION, "manifest version"),
        healthy,
        len(e.locators),
    )
    leases = b"".join(_u(x, 1, _LEASE_MAX, "lease id").to_bytes(32, "big") for x in e.locators)
    return b"".join((fixed, leases, lp1(name)))


def check_sorted(entries: Sequence[IndexEntry]) -> None:
    """``UsageError`` unless the file ids strictly increase."""
    if any(a.file_id >= b.file_id for a, b in itertools.pairwise(entries)):
        raise UsageError("index entries must be sorted by file id, each file once")


def _check_count(count: int) -> None:
    if count > MAX_ENTRIES:
        raise UsageError(f"a file index page holds at most {MAX_ENTRIES} files ({count} given)")


def join_entries(encoded: Sequence[bytes]) -> bytes:
    """A page's plaintext from entries already encoded (``encode_entry``), in order."""
    _check_count(len(encoded))
    return len(encoded).to_bytes(2, "big") + b"".join(encoded)


def encode_entries(entries: Sequence[IndexEntry]) -> bytes:
    """The canonical plaintext of one page; ``UsageError`` beyond the bounds."""
    _check_count(len(entries))
    check_sorted(entries)
    return join_entries([encode_entry(e) for e in entries])


def decode_entries(plaintext: bytes) -> tuple[IndexEntry, ...]:
    """The entries of one page's plaintext; ``UsageError`` unless it is canonical."""
    data, end = plaintext, len(plaintext)
    if end < 2:
        raise _malformed("truncated")
    count = int.from_bytes(data[:2], "big")
    if count > MAX_ENTRIES:
        raise _malformed(f"{count} entries (at most {MAX_ENTRIES})")
    pos = 2
    entries: list[IndexEntry] = []
    previous = b""
    for _ in range(count):
        if pos + _FIXED_BYTES > end:
            raise _malformed("truncated")
        file_id, size, created, version, healthy, locator_count = _FIXED.unpack_from(data, pos)
        pos += _FIXED_BYTES
        try:
            _u(version, 1, MAX_VERSION, "manifest version")
            if healthy != NOT_CHECKED:
                _u(healthy, 0, MAX_SHARES, "healthy shares (None: not checked)")
            _u(locator_count, 1, MAX_LOCATORS, "number of manifest locators")
            if file_id <= previous:
                raise UsageError("index entries must be sorted by file id, each file once")
        except UsageError as err:
            raise _malformed(str(err)) from None
        if pos + 32 * locator_count + 1 > end:
            raise _malformed("truncated")
        locators = []
        for _ in range(locator_count):
            lease = int.from_bytes(data[pos : pos + 32], "big")
            if lease == 0:
                raise _malformed(f"lease id must be an integer in 1..2**256-1, got {lease}")
            locators.append(LeaseId(lease))
            pos += 32
        length = data[pos]
        pos += 1
        if pos + length > end:
            raise _malformed("truncated")
        try:
            name = data[pos : pos + length].decode("utf-8")
            check_name(name)
        except UnicodeDecodeError:
            raise _malformed("a name is not UTF-8") from None
        except UsageError as err:
            raise _malformed(str(err)) from None
        pos += length
        health = None if healthy == NOT_CHECKED else healthy
        entries.append(IndexEntry(file_id, name, size, created, version, tuple(locators), health))
        previous = file_id
    if pos != end:
        raise _malformed(f"{end - pos} trailing bytes")
    return tuple(entries)


def _malformed(reason: str) -> UsageError:
    return UsageError(f"malformed file index: {reason}")
