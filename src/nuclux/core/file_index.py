"""The account's file index: the list ``nuclux ls`` shows, stored encrypted on the network.

This module holds the index's model (``FileIndex``, ``newest``), its key, and format 1,
which earlier releases wrote and this one reads and moves over: writers now use format 2
(``nuclux.core.index_tree``; ``docs/spec/manifest.md`` section 7).

Theory of operation (format 1)
------------------------------
An account's files are listed in an index that lives with its data, not on one device: it is
sealed under a key only the account's seed phrase can rebuild and stored as objects ``i/0``,
``i/1``, ... (one per page, ``nuclux.core.reference``) on the account's storage leases. Any
device with the phrase derives the same key, fetches the pages, and lists the same files.
A page's byte layout (integers big-endian; ``docs/spec/manifest.md`` section 6)::

    version u8 = 1 | owner 20 | page u16 | pages u16 (1..63) | counter u64 (1..)
    | nonce 12 | AES-256-GCM(index key, nonce, entries, aad = all of the above)

    index key = HKDF-SHA256(ikm = the account's X25519 private key, salt = "",
                            info = lp(b"nuclux/file-index/v1") || owner)
    nonce     = write id 8 || page u32     (the write id: 8 random bytes, one per write)
    entries   = count u16, then the entries (``nuclux.core.index_entries``)

Writing (``seal_pages``): the entries, sorted by file id, fill consecutive pages; a page takes
the next entry while its sealed size stays within ``PAGE_BYTES`` (64 KiB, the largest object
of an object batch, ``nuclux.core.batch``) and it holds at most ``MAX_ENTRIES``. An empty
index is one page of no entries. Every page of one write carries the same counter, ``pages``
and write id. At most ``MAX_PAGES`` (63) pages: 63 pages of 64 KiB and their framing fit one
4 MiB object batch, so a copy is stored whole or not at all. That is 9,765 files if every
entry is as large as it can be (422 bytes) and about 26,500 with entries of 155 bytes (three
locators, a 20-byte name); beyond, a write is refused with a ``UsageError``.

Reading (``open_page`` each page, then ``join_pages``): pages are accepted together only if
their numbers are exactly 0..pages-1, they agree on the counter, ``pages`` and the write id,
each nonce ends in its own page number, no page but a lone page 0 is empty, and the file ids
strictly increase across the pages too. The header is the associated data, so a provider can
neither renumber a page nor move it to another index; the write id keeps a reader from
mixing pages of two writes with the same counter (two devices writing at once) or from
taking part of an index for the whole. A lone page (``pages`` = 1) may carry any nonce and be
up to ``MAX_INDEX_BYTES`` (1,024 of the largest entries), as the first writers of this format
wrote it (``seal_index``, ``open_index``); a page of a paged index is at most ``PAGE_BYTES``.

The X25519 private key comes from the Ethereum key (``nuclux.keys.derive``), so the phrase,
or an imported Ethereum key, is all a device needs. The GCM tag authenticates the header too:
a provider can neither alter nor forge an index. It can serve an old one, so every write
raises ``counter`` and a reader keeps the highest counter among the copies it fetched
(``newest``). Two devices writing at once both write counter n+1; ``newest`` then picks one
deterministically and the other's change must be made again (the writer re-reads after
writing). The key is the same for every write, so a nonce must never repeat: pages of one
write differ in their page number, and writes in their random write id (two of w writes
share one with probability about w^2 / 2^65).
"""

from __future__ import annotations

import hashlib
import itertools
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from nuclux.core.auth import address_bytes, to_address
from nuclux.core.batch import MAX_OBJECT_BYTES
from nuclux.core.envelope import TAG_BYTES, X25519_KEY_BYTES, lp
from nuclux.core.index_entries import MAX_ENTRIES as MAX_ENTRIES
from nuclux.core.index_entries import MAX_ENTRY_BYTES as MAX_ENTRY_BYTES
from nuclux.core.index_entries import MAX_LOCATORS as MAX_LOCATORS
from nuclux.core.index_entries import NOT_CHECKED as NOT_CHECKED
from nuclux.core.index_entries import IndexEntry as IndexEntry
from nuclux.core.index_entries import check_sorted, encode_entry, join_entries
from nuclux.core.index_entries import decode_entries as decode_entries
from nuclux.core.index_entries import encode_entries as encode_entries
from nuclux.core.reference import Reference
from nuclux.core.types import Address
from nuclux.errors import IntegrityError, UsageError

INDEX_KEY_TAG: Final = b"nuclux/file-index/v1"
INDEX_VERSION: Final = 1
NONCE_BYTES: Final = 12
WRITE_ID_BYTES: Final = 8
PAGE_BYTES: Final = MAX_OBJECT_BYTES  # 65,536: a page is one object of an object batch
MAX_PAGES: Final = 63  # 63 x (65,536 + 9 bytes of framing) + 6 <= 4 MiB: one batch
_HEADER_BYTES: Final = 1 + 20 + 2 + 2 + 8 + NONCE_BYTES
_PAGE_OVERHEAD: Final = _HEADER_BYTES + 2 + TAG_BYTES  # a sealed page of no entries
MAX_INDEX_BYTES: Final = _PAGE_OVERHEAD + MAX_ENTRIES * MAX_ENTRY_BYTES

Change = IndexEntry | bytes  # an entry to put, or the file id of an entry to remove


def _file_id(entry: IndexEntry) -> bytes:
    return entry.file_id


@dataclass(frozen=True, slots=True)
class FileIndex:
    """The decoded index: ``entries`` sorted by file id, ``counter`` raised by every write."""

    owner: Address
    counter: int
    entries: tuple[IndexEntry, ...] = ()

    def reference(self, entry: IndexEntry) -> Reference:
        return Reference(self.owner, entry.file_id)

    def get(self, file_id: bytes) -> IndexEntry | None:
        i = bisect_left(self.entries, file_id, key=_file_id)
        if i < len(self.entries) and self.entries[i].file_id == file_id:
            return self.entries[i]
        return None

    def put(self, entry: IndexEntry) -> FileIndex:
        """A new index (counter + 1) with ``entry`` added or replacing the same file id."""
        return self.apply((entry,))

    def remove(self, file_id: bytes) -> FileIndex:
        """A new index (counter + 1) without ``file_id``."""
        if self.get(file_id) is None:
            raise UsageError(f"no file {file_id.hex()} in the index")
        return self.apply((file_id,))

    def apply(self, changes: Iterable[Change]) -> FileIndex:
        """A new index after ``changes`` in order: an entry is put (added, or replacing the
        entry of its file id), a file id is removed if present. The counter rises by one per
        put and per removal of a present file (``self`` if nothing changed). For k changes
        to n entries: O(k log n) lookups and one O(n) copy."""
        final: dict[bytes, IndexEntry | None] = {}
        made = 0
        for change in changes:
            if isinstance(change, IndexEntry):
                final[change.file_id] = change
            elif (final[change] if change in final else self.get(change)) is not None:
                final[change] = None
            else:
                continue
            made += 1
        if not made:
            return self
        out: list[IndexEntry] = []
        pos = 0
        for file_id in sorted(final):
            i = bisect_left(self.entries, file_id, lo=pos, key=_file_id)
            out.extend(self.entries[pos:i])
            found = i < len(self.entries) and self.entries[i].file_id == file_id
            pos = i + 1 if found else i
            entry = final[file_id]
            if entry is not None:
                out.append(entry)
        out.extend(self.entries[pos:])
        return replace(self, counter=self.counter + made, entries=tuple(out))


@dataclass(frozen=True, slots=True)
class IndexPage:
    """One opened page: page ``page`` of the ``pages`` written together by the write
    ``write_id`` (the nonce's first 8 bytes) with ``counter``."""

    owner: Address
    counter: int
    page: int
    pages: int
    write_id: bytes
    entries: tuple[IndexEntry, ...]


def index_key(x25519_private: bytes, owner: str) -> bytes:
    """The index's AES-256 key, derived from the account's X25519 private key."""
    if not isinstance(x25519_private, bytes) or len(x25519_private) != X25519_KEY_BYTES:
        raise UsageError("an X25519 private key is 32 bytes")
    info = lp(INDEX_KEY_TAG) + address_bytes(owner)
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"", info=info).derive(x25519_private)


def page_nonce(write_id: bytes, page: int) -> bytes:
    """The nonce of page ``page`` of the write ``write_id``."""
    if not isinstance(write_id, bytes) or len(write_id) != WRITE_ID_BYTES:
        raise UsageError(f"a file index write id is {WRITE_ID_BYTES} bytes")
    return write_id + page.to_bytes(4, "big")


def _seal(
    owner: str, key: bytes, page: int, pages: int, counter: int, nonce: bytes, plain: bytes
) -> bytes:
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
        raise UsageError(f"the index nonce is {NONCE_BYTES} bytes")
    if not isinstance(counter, int) or isinstance(counter, bool) or not 1 <= counter < 2**64:
        raise UsageError(f"the index counter must be an integer in 1..2**64-1, got {counter!r}")
    if not 0 <= page < 2**16 or not 0 <= pages < 2**16:
        raise UsageError(f"file index page {page} of {pages}: each is a u16")
    header = b"".join(
        [
            bytes([INDEX_VERSION]),
            address_bytes(owner),
            page.to_bytes(2, "big"),
            pages.to_bytes(2, "big"),
            counter.to_bytes(8, "big"),
            nonce,
        ]
    )
    return header + AESGCM(key).encrypt(nonce, plain, header)


def _paginate(entries: Sequence[IndexEntry]) -> list[list[bytes]]:
    """The encoded entries of each page: consecutive runs, each as long as fits a page."""
    check_sorted(entries)
    runs: list[list[bytes]] = [[]]
    size = _PAGE_OVERHEAD
    for entry in entries:
        encoded = encode_entry(entry)
        if size + len(encoded) > PAGE_BYTES or len(runs[-1]) == MAX_ENTRIES:
            runs.append([])
            size = _PAGE_OVERHEAD
        runs[-1].append(encoded)
        size += len(encoded)
    return runs


def seal_pages(index: FileIndex, *, x25519_private: bytes, write_id: bytes) -> list[bytes]:
    """Encrypt the index as the pages stored at ``index_object_id(0)``, ``(1)``, ...
    ``write_id``: 8 fresh random bytes per write (the key is the same for every write)."""
    page_nonce(write_id, 0)
    runs = _paginate(index.entries)
    if len(runs) > MAX_PAGES:
        raise UsageError(
            f"the file index holds at most {MAX_PAGES} pages of {PAGE_BYTES:,} bytes (MAX_PAGES)"
            f" and these {len(index.entries):,} files need {len(runs)}: remove some files"
        )
    key = index_key(x25519_private, index.owner)
    return [
        _seal(index.owner, key, p, len(runs), index.counter, page_nonce(write_id, p), b)
        for p, b in enumerate(join_entries(run) for run in runs)
    ]


def seal_page(page: IndexPage, *, x25519_private: bytes) -> bytes:
    """Encrypt one page as given. Whether a set of pages is acceptable is checked when they
    are read (``open_page``, ``join_pages``); writers use ``seal_pages``."""
    return _seal(
        page.owner,
        index_key(x25519_private, page.owner),
        page.page,
        page.pages,
        page.counter,
        page_nonce(page.write_id, page.page),
        encode_entries(page.entries),
    )


def seal_index(index: FileIndex, *, x25519_private: bytes, nonce: bytes) -> bytes:
    """The whole index as one lone page under any 12-byte ``nonce``, as the first writers of
    this format stored it: at most ``MAX_ENTRIES`` entries, up to ``MAX_INDEX_BYTES``.
    Writers use ``seal_pages``."""
    if len(index.entries) > MAX_ENTRIES:
        raise UsageError(
            f"one file index page holds at most {MAX_ENTRIES} files ({len(index.entries)}"
            " given): a larger index is sealed in pages (seal_pages)"
        )
    key = index_key(x25519_private, index.owner)
    plain = encode_entries(index.entries)
    return _seal(index.owner, key, 0, 1, index.counter, nonce, plain)


def open_page(data: bytes, *, owner: str, x25519_private: bytes) -> IndexPage:
    """Decrypt one page fetched from a provider. ``IntegrityError`` if it is not this
    account's or was altered; ``UsageError`` if malformed or out of bounds."""
    if not isinstance(data, bytes) or not _PAGE_OVERHEAD <= len(data) <= MAX_INDEX_BYTES:
        raise UsageError(
            f"malformed file index: expected {_PAGE_OVERHEAD}..{MAX_INDEX_BYTES} bytes"
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
    nonce = header[-NONCE_BYTES:]
    try:
        plain = AESGCM(index_key(x25519_private, owner)).decrypt(nonce, sealed, header)
    except InvalidTag:
        raise IntegrityError(
            "file index does not open: the key is not this account's, or the index was altered"
        ) from None
    page, pages = int.from_bytes(header[21:23], "big"), int.from_bytes(header[23:25], "big")
    counter = int.from_bytes(header[25:33], "big")
    where = f"malformed file index page {page} of {pages}"
    if counter == 0:
        raise UsageError(f"{where}: counter 0")
    if not 1 <= pages <= MAX_PAGES or page >= pages:
        raise UsageError(f"{where}: an index has 1..{MAX_PAGES} pages, numbered from 0")
    if pages > 1 and int.from_bytes(nonce[WRITE_ID_BYTES:], "big") != page:
        raise UsageError(f"{where}: its nonce does not end in its page number")
    if pages > 1 and len(data) > PAGE_BYTES:
        raise UsageError(f"{where}: a page of a paged index is at most {PAGE_BYTES} bytes")
    entries = decode_entries(plain)
    if pages > 1 and not entries:
        raise UsageError(f"{where}: empty (only a lone page 0 may be)")
    return IndexPage(to_address(data[1:21]), counter, page, pages, nonce[:WRITE_ID_BYTES], entries)


def join_pages(pages: Iterable[IndexPage]) -> FileIndex:
    """The index that the pages of one write make up, in any order. ``IntegrityError`` if
    they are not exactly the pages of one write of one account (a page missing or repeated,
    pages of two writes); ``UsageError`` if the write breaks the format's rules."""
    got = sorted(pages, key=lambda p: p.page)
    if not got:
        raise UsageError("no file index pages to join")
    first = got[0]
    if not 1 <= first.pages <= MAX_PAGES:
        raise UsageError(f"a file index has 1..{MAX_PAGES} pages, not {first.pages}")
    for p in got:
        if p.owner != first.owner:
            raise IntegrityError(f"file index pages of two accounts: {first.owner}, {p.owner}")
        if (p.counter, p.pages) != (first.counter, first.pages) or (
            first.pages > 1 and p.write_id != first.write_id
        ):
            raise IntegrityError(
                "file index pages of two writes (counter, pages, write id):"
                f" {first.counter}, {first.pages}, {first.write_id.hex()} and"
                f" {p.counter}, {p.pages}, {p.write_id.hex()}"
            )
    numbers = [p.page for p in got]
    if numbers != list(range(first.pages)):
        missing = sorted(set(range(first.pages)) - set(numbers))
        repeated = sorted(n for n, times in Counter(numbers).items() if times > 1)
        raise IntegrityError(
            f"a file index of {first.pages} pages, but pages {missing} are missing and"
            f" {repeated} repeated (or numbered beyond): a torn or mixed copy"
        )
    if first.pages > 1 and any(not p.entries for p in got):
        raise UsageError("malformed file index: an empty page in a paged index")
    entries = tuple(itertools.chain.from_iterable(p.entries for p in got))
    try:
        check_sorted(entries)
    except UsageError:
        raise UsageError(
            "malformed file index: file ids must strictly increase across its pages"
        ) from None
    return FileIndex(first.owner, first.counter, entries)


def open_index(data: bytes, *, owner: str, x25519_private: bytes) -> FileIndex:
    """Decrypt a lone-page index. ``IntegrityError`` if it is not this account's index or
    was altered; ``UsageError`` if malformed, or if it is one page of a paged index (a part
    is never taken for the whole: ``open_page`` every page, then ``join_pages``)."""
    page = open_page(data, owner=owner, x25519_private=x25519_private)
    if page.pages != 1:
        raise UsageError(
            f"file index page {page.page} of {page.pages}: a paged index is read whole"
            " (open_page every page, then join_pages)"
        )
    return join_pages([page])


def empty_index(owner: str) -> FileIndex:
    """The index of an account that has stored nothing yet (counter 0: the first write is 1)."""
    return FileIndex(to_address(address_bytes(owner)), 0)


def tiebreak(index: FileIndex) -> bytes:
    """sha256 of the entries as one page would encode them (count u16, then the entries): a
    readable index holds at most 63 x 1,024 < 2^16 entries."""
    count = len(index.entries)
    digest = hashlib.sha256(count.to_bytes(2 if count < 2**16 else 8, "big"))
    for entry in index.entries:
        digest.update(encode_entry(entry))
    return digest.digest()


def newest(indexes: Iterable[FileIndex]) -> FileIndex:
    """The index to believe among copies fetched from several providers: the highest
    counter; equal counters (two devices wrote at once) are broken by the larger sha256 of the
    entries' encoding, so every device picks the same one."""
    candidates = list(indexes)
    if not candidates:
        raise UsageError("no file index copies to choose from")
    top = max(index.counter for index in candidates)
    tied = list({id(i): i for i in candidates if i.counter == top}.values())
    if len(tied) == 1:
        return tied[0]
    return max(tied, key=tiebreak)
