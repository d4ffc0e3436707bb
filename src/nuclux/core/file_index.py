"""The account's file index: the list ``nuclux ls`` shows, stored encrypted on the network.

Theory of operation
-------------------
An account's files are listed in an index that lives with its data, not on one device: it is
sealed under a key only the account's seed phrase can rebuild and stored as object ``i/0``
(``nuclux.core.reference``) on the account's storage leases. Any device with the phrase
derives the same key, fetches the object, and lists the same files. Byte layout (integers
big-endian; ``docs/spec/manifest.md``)::

    version u8 = 1 | owner 20 | page u16 (= 0) | pages u16 (= 1) | counter u64 (1..)
    | nonce 12 | AES-256-GCM(index key, nonce, entries, aad = all of the above)

    index key = HKDF-SHA256(ikm = the account's X25519 private key, salt = "",
                            info = lp(b"nuclux/file-index/v1") || owner)
    entries   = count u16 (0..1024), then per entry, file ids strictly increasing:
                file_id 16 | size u64 | created_at u64 | manifest_version u32 (1..)
                | healthy u8 (shares last seen healthy, 0..64; 255 = not checked)
                | locator count u8 (1..4), lease ids 32 each (where the manifest is kept)
                | name: len u8 || UTF-8 (at most 255 bytes, no control characters)

The X25519 private key comes from the Ethereum key (``nuclux.keys.derive``), so the phrase,
or an imported Ethereum key, is all a device needs. The GCM tag authenticates the header
too: a provider can neither alter nor forge an index. It can serve an old one, so every write
raises ``counter`` and a reader keeps the highest counter among the copies it fetched
(``newest``). Two devices writing at once both write counter n+1; ``newest`` then picks one
deterministically and the other's change must be made again (the writer re-reads after
writing).

Bounds: an entry is at most 422 bytes, a page holds at most ``MAX_ENTRIES`` (1024) entries,
so a sealed page is at most ``MAX_INDEX_BYTES`` (432,191 bytes). Beyond 1024 files the plan is
paging: entries sorted by file id split into consecutive pages ``i/0``, ``i/1``, ... each
carrying ``page``, ``pages`` and the same ``counter`` (a reader accepts a set of pages only if
they agree). This version writes and reads one page and refuses more entries with a clear
``UsageError``.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from nuclux.core.auth import address_bytes, to_address
from nuclux.core.envelope import TAG_BYTES, X25519_KEY_BYTES, lp
from nuclux.core.manifest import MAX_SHARES, MAX_VERSION, encode_name, lp1
from nuclux.core.reference import FILE_ID_BYTES, Reader, Reference
from nuclux.core.types import Address, LeaseId
from nuclux.errors import IntegrityError, UsageError

INDEX_KEY_TAG: Final = b"nuclux/file-index/v1"
INDEX_VERSION: Final = 1
NONCE_BYTES: Final = 12
MAX_ENTRIES: Final = 1024
MAX_LOCATORS: Final = 4
NOT_CHECKED: Final = 255
_HEADER_BYTES: Final = 1 + 20 + 2 + 2 + 8 + NONCE_BYTES
MAX_ENTRY_BYTES: Final = FILE_ID_BYTES + 8 + 8 + 4 + 1 + 1 + MAX_LOCATORS * 32 + 1 + 255
MAX_INDEX_BYTES: Final = _HEADER_BYTES + 2 + MAX_ENTRIES * MAX_ENTRY_BYTES + TAG_BYTES
_MIN_INDEX_BYTES: Final = _HEADER_BYTES + 2 + TAG_BYTES


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


@dataclass(frozen=True, slots=True)
class FileIndex:
    """The decoded index: ``entries`` sorted by file id, ``counter`` raised by every write."""

    owner: Address
    counter: int
    entries: tuple[IndexEntry, ...] = ()

    def reference(self, entry: IndexEntry) -> Reference:
        return Reference(self.owner, entry.file_id)

    def get(self, file_id: bytes) -> IndexEntry | None:
        for entry in self.entries:
            if entry.file_id == file_id:
                return entry
        return None

    def put(self, entry: IndexEntry) -> FileIndex:
        """A new index (counter + 1) with ``entry`` added or replacing the same file id."""
        rest = [e for e in self.entries if e.file_id != entry.file_id]
        entries = tuple(sorted([*rest, entry], key=lambda e: e.file_id))
        return replace(self, counter=self.counter + 1, entries=entries)

    def remove(self, file_id: bytes) -> FileIndex:
        """A new index (counter + 1) without ``file_id``."""
        entries = tuple(e for e in self.entries if e.file_id != file_id)
        if len(entries) == len(self.entries):
            raise UsageError(f"no file {file_id.hex()} in the index")
        return replace(self, counter=self.counter + 1, entries=entries)


def _u(value: object, lo: int, hi: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        top = "2**256-1" if hi == 2**256 - 1 else str(hi)
        raise UsageError(f"{what} must be an integer in {lo}..{top}, got {value!r}")
    return value


def _entry(e: IndexEntry) -> bytes:
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


def encode_entries(entries: tuple[IndexEntry, ...]) -> bytes:
    """The canonical plaintext of a page; ``UsageError`` beyond the bounds."""
    if len(entries) > MAX_ENTRIES:
        raise UsageError(
            f"the file index holds at most {MAX_ENTRIES} files in this version of Nuclux"
            f" ({len(entries)} given): remove some, or upgrade for a paged index"
        )
    ids = [e.file_id for e in entries]
    if any(a >= b for a, b in itertools.pairwise(ids)):
        raise UsageError("index entries must be sorted by file id, each file once")
    return len(entries).to_bytes(2, "big") + b"".join(_entry(e) for e in entries)


def decode_entries(plaintext: bytes) -> tuple[IndexEntry, ...]:
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


def index_key(x25519_private: bytes, owner: str) -> bytes:
    """The index's AES-256 key, derived from the account's X25519 private key."""
    if not isinstance(x25519_private, bytes) or len(x25519_private) != X25519_KEY_BYTES:
        raise UsageError("an X25519 private key is 32 bytes")
    info = lp(INDEX_KEY_TAG) + address_bytes(owner)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"", info=info).derive(x25519_private)


def _header(owner: str, counter: int, nonce: bytes) -> bytes:
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
        raise UsageError(f"the index nonce is {NONCE_BYTES} bytes")
    return b"".join(
        [
            bytes([INDEX_VERSION]),
            address_bytes(owner),
            (0).to_bytes(2, "big"),
            (1).to_bytes(2, "big"),
            _u(counter, 1, 2**64 - 1, "index counter").to_bytes(8, "big"),
            nonce,
        ]
    )


def seal_index(index: FileIndex, *, x25519_private: bytes, nonce: bytes) -> bytes:
    """Encrypt the index for storage at ``index_object_id(0)``. ``nonce``: 12 fresh random
    bytes (the key is the same for every write)."""
    header = _header(index.owner, index.counter, nonce)
    plaintext = encode_entries(index.entries)
    key = index_key(x25519_private, index.owner)
    return header + AESGCM(key).encrypt(nonce, plaintext, header)


def open_index(data: bytes, *, owner: str, x25519_private: bytes) -> FileIndex:
    """Decrypt an index fetched from a provider. ``IntegrityError`` if it is not this
    account's index or was altered; ``UsageError`` if malformed."""
    if not isinstance(data, bytes) or not _MIN_INDEX_BYTES <= len(data) <= MAX_INDEX_BYTES:
        raise UsageError(
            f"malformed file index: expected {_MIN_INDEX_BYTES}..{MAX_INDEX_BYTES} bytes"
        )
    if data[0] != INDEX_VERSION:
        raise UsageError(
            f"unknown file index version {data[0]}: this Nuclux reads version {INDEX_VERSION};"
            " upgrade to read it"
        )
    if data[1:21] != address_bytes(owner):
        raise IntegrityError(
            f"this file index belongs to {to_address(data[1:21])}, not to"
            f" {to_address(address_bytes(owner))}"
        )
    header, sealed = data[:_HEADER_BYTES], data[_HEADER_BYTES:]
    key = index_key(x25519_private, owner)
    try:
        plaintext = AESGCM(key).decrypt(header[-NONCE_BYTES:], sealed, header)
    except InvalidTag:
        raise IntegrityError(
            "file index does not open: the key is not this account's, or the index was altered"
        ) from None
    page, pages = int.from_bytes(header[21:23], "big"), int.from_bytes(header[23:25], "big")
    if (page, pages) != (0, 1):
        raise UsageError(
            f"file index page {page} of {pages}: this Nuclux reads single-page indexes;"
            " upgrade to read it"
        )
    counter = int.from_bytes(header[25:33], "big")
    if counter == 0:
        raise UsageError("malformed file index: counter 0")
    return FileIndex(to_address(data[1:21]), counter, decode_entries(plaintext))


def empty_index(owner: str) -> FileIndex:
    """The index of an account that has stored nothing yet (counter 0: the first write is 1)."""
    return FileIndex(to_address(address_bytes(owner)), 0)


def newest(indexes: Iterable[FileIndex]) -> FileIndex:
    """The index to believe among copies fetched from several providers: the highest
    counter; equal counters (two devices wrote at once) are broken by the larger sha256 of the
    entries' encoding, so every device picks the same one."""
    candidates = list(indexes)
    if not candidates:
        raise UsageError("no file index copies to choose from")
    return max(
        candidates,
        key=lambda i: (i.counter, hashlib.sha256(encode_entries(i.entries)).digest()),
    )
