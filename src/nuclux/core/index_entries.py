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

Every field has exactly one encoding, so decoding re-encodes and compares: a page that
decodes is canonical. An entry is at most ``MAX_ENTRY_BYTES`` (422) bytes and at least
``MIN_ENTRY_BYTES`` (71).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from nuclux.core.manifest import MAX_SHARES, MAX_VERSION, encode_name, lp1
from nuclux.core.reference import FILE_ID_BYTES, Reader
from nuclux.core.types import LeaseId
from nuclux.errors import UsageError

MAX_ENTRIES: Final = 1024
MAX_LOCATORS: Final = 4
NOT_CHECKED: Final = 255
_FIXED_BYTES: Final = FILE_ID_BYTES + 8 + 8 + 4 + 1 + 1
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
    return b"".join(
        [
            e.file_id,
            _u(e.size, 0, 2**64 - 1, "size").to_bytes(8, "big"),
            _u(e.created_at, 0, 2**64 - 1, "created_at").to_bytes(8, "big"),
            _u(e.manifest_version, 1, MAX_VERSION, "manifest version").to_bytes(4, "big"),
            bytes([healthy, len(e.locators)]),
            *(_u(lease, 1, 2**256 - 1, "lease id").to_bytes(32, "big") for lease in e.locators),
            lp1(encode_name(e.name)),
        ]
    )


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
    r = Reader(plaintext, "file index")
    count = r.uint(2)
    if count > MAX_ENTRIES:
        raise r.fail(f"{count} entries (at most {MAX_ENTRIES})")
    entries = []
    for _ in range(count):
        file_id, size, created, version = r.take(FILE_ID_BYTES), r.uint(8), r.uint(8), r.uint(4)
        healthy, locator_count = r.take(2)
        locators = tuple(LeaseId(r.uint(32)) for _ in range(locator_count))
        try:
            name = r.take(r.uint(1)).decode("utf-8")
        except UnicodeDecodeError:
            raise r.fail("a name is not UTF-8") from None
        health = None if healthy == NOT_CHECKED else healthy
        entries.append(IndexEntry(file_id, name, size, created, version, locators, health))
    r.end()
    result = tuple(entries)
    try:
        canonical = encode_entries(result) == plaintext
    except UsageError as err:
        raise r.fail(str(err)) from None
    if not canonical:  # pragma: no cover - every field above has exactly one encoding
        raise r.fail("non-canonical encoding")
    return result
