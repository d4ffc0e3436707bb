"""The account's file index, format 2: a head naming content-addressed pages.

Theory of operation
-------------------
Format 1 (``nuclux.core.file_index``) stores the whole index as pages ``i/0`` .. ``i/62``
rewritten together on every write, so an index is at most 63 pages (about 26,500 files) and
adding one file re-sends all of them. Format 2 splits the index in two kinds of object
(``docs/spec/manifest.md`` section 7; integers big-endian):

- a **page** holds a run of entries, sorted by file id, and is stored under its own name,
  ``i/p/<name>`` with ``name = sha256(sealed page)[:16]``. A page is never changed: a write
  that changes entries seals new pages for them and leaves the other pages as they are::

      version u8 = 2 | kind "P" | owner 20 | nonce 12 | AES-GCM(index key, nonce, entries,
                                                                  aad = the 34 bytes before)

- the **head**, object ``i/0``, lists the pages in file-id order, each with its name, its
  first file id (``low``) and its number of entries, plus the pages it stopped naming and
  when (``retired``)::

      version u8 = 2 | kind "H" | owner 20 | counter u64 | written_at u64 | nonce 12
      | AES-GCM(index key, nonce, body, aad = the 50 bytes before)
      body = page count u32 | (name 16 | low 16 | count u16)*
             | retired count u16 | (name 16 | since u64)*

The key is format 1's (``index_key``); the version and kind bytes in the associated data keep
a head from opening as a page or as a format 1 page and the other way round. Nonces are 12
random bytes per sealed object: with one key, n seals repeat a nonce with probability about
n^2 / 2^97.

A format 1 reader fetching ``i/0`` finds version 2 and refuses it with its "written by a
newer Nuclux, upgrade" error, and so never writes over a format 2 index.

Writing (``plan``): a change lands in the page whose range holds its file id (page i holds
``low_i <= id < low_{i+1}``; the first page everything below ``low_1`` too). The changed
pages of each run of neighbouring changed pages are joined and cut again into as few pages
of at most ``PAGE_BYTES`` as fit, of about equal size (``split``), so a page that overflows
becomes two half-full pages and a page left empty disappears. Every other page keeps its
name: adding a file re-seals one page and the head. An index is at most ``MAX_PAGES`` pages
(25,000: at least 1.9 million files of the largest entries while pages are half full).

Reading (``open_head``, ``open_page``, ``join``): the head authenticates every page by name,
so a provider can neither swap pages nor serve pages of another write under a head; each page
must hold exactly the ``count`` entries the head gives, its first one ``low``, all below the
next page's ``low``.

Retiring: a page a write stops naming is listed in the head's ``retired`` with the write's
time, and deleted by a later write once it has been retired ``RETIRE_AFTER`` seconds (a
reader still fetching the pages of an older head has that long), or once ``MAX_RETIRED``
newer retirements push it out of the list.
"""

from __future__ import annotations

import hashlib
import itertools
import struct
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nuclux.core.auth import address_bytes, to_address
from nuclux.core.envelope import TAG_BYTES
from nuclux.core.file_index import Change, FileIndex
from nuclux.core.index_entries import (
    MAX_ENTRIES,
    IndexEntry,
    check_sorted,
    decode_entries,
    encode_entry,
    join_entries,
)
from nuclux.core.reference import FILE_ID_BYTES
from nuclux.core.types import Address
from nuclux.errors import IntegrityError, UsageError

FORMAT: Final = 2
NONCE_BYTES: Final = 12
NAME_BYTES: Final = 16
PAGE_BYTES: Final = 64 << 10  # a page is one object of an object batch
MAX_PAGES: Final = 25_000
MAX_RETIRED: Final = 4096
RETIRE_AFTER: Final = 3600  # seconds a retired page is kept for readers of older heads
_KIND_HEAD: Final = b"H"
_KIND_PAGE: Final = b"P"
_PAGE_HEADER: Final = 2 + 20 + NONCE_BYTES
_HEAD_HEADER: Final = 2 + 20 + 8 + 8 + NONCE_BYTES
PAGE_OVERHEAD: Final = _PAGE_HEADER + 2 + TAG_BYTES  # a sealed page's bytes besides its entries
_REF = struct.Struct(f">{NAME_BYTES}s{FILE_ID_BYTES}sH")
_RETIRED = struct.Struct(f">{NAME_BYTES}sQ")
MAX_HEAD_BYTES: Final = (
    _HEAD_HEADER + 4 + MAX_PAGES * _REF.size + 2 + MAX_RETIRED * _RETIRED.size + TAG_BYTES
)


@dataclass(frozen=True, slots=True)
class PageRef:
    """A page as the head names it: ``name`` (its object's), ``low`` (its first file id) and
    ``count`` (its entries)."""

    name: bytes
    low: bytes
    count: int


@dataclass(frozen=True, slots=True)
class Retired:
    name: bytes
    since: int  # the unix time of the write that stopped naming it


@dataclass(frozen=True, slots=True)
class IndexHead:
    owner: Address
    counter: int
    written_at: int
    pages: tuple[PageRef, ...]
    retired: tuple[Retired, ...] = ()
    digest: bytes = b""  # sha256 of the body: breaks ties between heads of one counter

    @property
    def entries(self) -> int:
        return sum(p.count for p in self.pages)

    def slot(self, file_id: bytes) -> int:
        """The page whose range holds ``file_id`` (0 for an index of no pages)."""
        return max(0, bisect_right(self.pages, file_id, key=_low) - 1)


def _low(ref: PageRef) -> bytes:
    return ref.low


def page_name(sealed: bytes) -> bytes:
    return hashlib.sha256(sealed).digest()[:NAME_BYTES]


def _nonce(nonce: bytes) -> bytes:
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
        raise UsageError(f"a file index nonce is {NONCE_BYTES} bytes")
    return nonce


def _u64(value: object, what: str, low: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value < 2**64:
        raise UsageError(f"{what} must be an integer in {low}..2**64-1, got {value!r}")
    return value


def _open(key: bytes, data: bytes, header: int, what: str) -> bytes:
    try:
        return AESGCM(key).decrypt(
            data[header - NONCE_BYTES : header], data[header:], data[:header]
        )
    except InvalidTag:
        raise IntegrityError(
            f"file index {what} does not open: the key is not this account's, or it was altered"
        ) from None


def _check_prefix(data: object, kind: bytes, owner: str, low: int, high: int, what: str) -> bytes:
    if not isinstance(data, bytes) or not low <= len(data) <= high:
        raise UsageError(f"malformed file index {what}: expected {low}..{high} bytes")
    if data[0] != FORMAT or data[1:2] != kind:
        raise UsageError(f"not a format {FORMAT} file index {what}")
    if data[2:22] != address_bytes(owner):
        raise IntegrityError(
            f"this file index {what} belongs to {to_address(data[2:22])}, not to"
            f" {to_address(address_bytes(owner))}"
        )
    return data


# -- pages ---------------------------------------------------------------------------------------


def seal_page(
    owner: str, entries: Sequence[IndexEntry], *, key: bytes, nonce: bytes
) -> tuple[PageRef, bytes]:
    """One page of ``entries`` (at least one, sorted): its reference and sealed bytes."""
    if not entries:
        raise UsageError("a file index page holds at least one entry")
    check_sorted(entries)
    plain = join_entries([encode_entry(e) for e in entries])
    header = bytes([FORMAT]) + _KIND_PAGE + address_bytes(owner) + _nonce(nonce)
    sealed = header + AESGCM(key).encrypt(nonce, plain, header)
    if len(sealed) > PAGE_BYTES:
        raise UsageError(f"a file index page is at most {PAGE_BYTES} bytes, not {len(sealed)}")
    return PageRef(page_name(sealed), entries[0].file_id, len(entries)), sealed


def open_page(data: bytes, ref: PageRef, *, owner: str, key: bytes) -> tuple[IndexEntry, ...]:
    """The entries of page ``ref`` as fetched. ``IntegrityError`` unless it is the very page
    the head names (its name, its first file id and its count); ``UsageError`` if malformed."""
    _check_prefix(data, _KIND_PAGE, owner, PAGE_OVERHEAD, PAGE_BYTES, "page")
    if page_name(data) != ref.name:
        raise IntegrityError(f"file index page {ref.name.hex()}: its bytes do not match its name")
    entries = decode_entries(_open(key, data, _PAGE_HEADER, "page"))
    if len(entries) != ref.count or not entries or entries[0].file_id != ref.low:
        raise IntegrityError(
            f"file index page {ref.name.hex()} holds {len(entries)} entries from"
            f" {entries[0].file_id.hex() if entries else '-'}; its head says {ref.count} from"
            f" {ref.low.hex()}"
        )
    return entries


# -- the head ------------------------------------------------------------------------------------


def seal_head(head: IndexHead, *, key: bytes, nonce: bytes) -> bytes:
    """The head object ``i/0``; ``UsageError`` beyond the format's bounds."""
    return sealed_head(head, key=key, nonce=nonce)[1]


def sealed_head(head: IndexHead, *, key: bytes, nonce: bytes) -> tuple[IndexHead, bytes]:
    """``head`` with its ``digest`` (as ``open_head`` gives it) and the object ``i/0``."""
    _check_refs(head.pages)
    if len(head.retired) > MAX_RETIRED:
        raise UsageError(f"a file index head lists at most {MAX_RETIRED} retired pages")
    body = b"".join(
        [
            len(head.pages).to_bytes(4, "big"),
            *(_REF.pack(p.name, p.low, p.count) for p in head.pages),
            len(head.retired).to_bytes(2, "big"),
            *(
                _RETIRED.pack(_name(r.name), _u64(r.since, "a retirement time"))
                for r in head.retired
            ),
        ]
    )
    header = b"".join(
        [
            bytes([FORMAT]),
            _KIND_HEAD,
            address_bytes(head.owner),
            _u64(head.counter, "the index counter", 1).to_bytes(8, "big"),
            _u64(head.written_at, "written_at").to_bytes(8, "big"),
            _nonce(nonce),
        ]
    )
    data = header + AESGCM(key).encrypt(nonce, body, header)
    return replace(head, digest=hashlib.sha256(body).digest()), data


def open_head(data: bytes, *, owner: str, key: bytes) -> IndexHead:
    """The head fetched from a provider. ``IntegrityError`` if it is not this account's or
    was altered; ``UsageError`` if malformed."""
    _check_prefix(data, _KIND_HEAD, owner, _HEAD_HEADER + 6 + TAG_BYTES, MAX_HEAD_BYTES, "head")
    body = _open(key, data, _HEAD_HEADER, "head")
    counter = int.from_bytes(data[22:30], "big")
    if counter == 0:
        raise UsageError("malformed file index head: counter 0")
    count = int.from_bytes(body[:4], "big")
    pos = 4 + count * _REF.size
    if count > MAX_PAGES or pos + 2 > len(body):
        raise UsageError(f"malformed file index head: {count} pages")
    retired_count = int.from_bytes(body[pos : pos + 2], "big")
    if retired_count > MAX_RETIRED or pos + 2 + retired_count * _RETIRED.size != len(body):
        raise UsageError("malformed file index head: its lists do not match its size")
    pages = tuple(PageRef(*_REF.unpack_from(body, 4 + i * _REF.size)) for i in range(count))
    retired = tuple(
        Retired(*_RETIRED.unpack_from(body, pos + 2 + i * _RETIRED.size))
        for i in range(retired_count)
    )
    try:
        _check_refs(pages)
    except UsageError as err:
        raise UsageError(f"malformed file index head: {err}") from None
    return IndexHead(
        to_address(data[2:22]),
        counter,
        int.from_bytes(data[30:38], "big"),
        pages,
        retired,
        hashlib.sha256(body).digest(),
    )


def _name(name: bytes) -> bytes:
    if not isinstance(name, bytes) or len(name) != NAME_BYTES:
        raise UsageError(f"a file index page name is {NAME_BYTES} bytes")
    return name


def _check_refs(pages: Sequence[PageRef]) -> None:
    if len(pages) > MAX_PAGES:
        raise UsageError(
            f"the file index holds at most {MAX_PAGES:,} pages (MAX_PAGES), not {len(pages):,}"
        )
    for p in pages:
        _name(p.name)
        if not isinstance(p.low, bytes) or len(p.low) != FILE_ID_BYTES:
            raise UsageError(f"a page's first file id is {FILE_ID_BYTES} bytes")
        if not isinstance(p.count, int) or not 1 <= p.count <= MAX_ENTRIES:
            raise UsageError(f"a page holds 1..{MAX_ENTRIES} entries, not {p.count!r}")
    if any(a.low >= b.low for a, b in itertools.pairwise(pages)):
        raise UsageError("pages must be in increasing order of their first file id")


def join(head: IndexHead, pages: Sequence[tuple[IndexEntry, ...]]) -> FileIndex:
    """The index the head and its opened pages (in the head's order) make up.
    ``IntegrityError`` if a page holds a file id beyond the next page's first."""
    if len(pages) != len(head.pages):
        raise UsageError(f"the head names {len(head.pages)} pages, {len(pages)} given")
    for ref, nxt, entries in zip(head.pages, head.pages[1:], pages, strict=False):
        if entries[-1].file_id >= nxt.low:
            raise IntegrityError(
                f"file index page {ref.name.hex()} reaches past the next page's first file id"
            )
    return FileIndex(head.owner, head.counter, tuple(itertools.chain.from_iterable(pages)))


# -- writing -------------------------------------------------------------------------------------


def split(entries: Sequence[IndexEntry]) -> list[tuple[IndexEntry, ...]]:
    """``entries`` (sorted) cut into as few pages as fit, of about equal encoded size."""
    if not entries:
        return []
    sizes = [len(encode_entry(e)) for e in entries]
    usable = PAGE_BYTES - PAGE_OVERHEAD
    total = sum(sizes)
    k = max(-(-total // usable), -(-len(entries) // MAX_ENTRIES))
    ends = list(itertools.accumulate(sizes))
    while True:
        cuts = [0]
        for i in range(1, k):  # the first entry at which the running size passes i/k of all
            cuts.append(max(cuts[-1], bisect_right(ends, total * i // k)))
        cuts.append(len(entries))
        runs = [(a, b) for a, b in itertools.pairwise(cuts) if b > a]
        if all(
            b - a <= MAX_ENTRIES and ends[b - 1] - (ends[a - 1] if a else 0) <= usable
            for a, b in runs
        ):
            return [tuple(entries[a:b]) for a, b in runs]
        k += 1


@dataclass(frozen=True, slots=True)
class Plan:
    """A write's pages in order: a ``PageRef`` kept as it is, or the entries of a new page;
    ``made`` counts the changes that changed something (the counter's rise)."""

    made: int
    layout: tuple[PageRef | tuple[IndexEntry, ...], ...]
    dropped: tuple[PageRef, ...]


def slots(head: IndexHead, changes: Iterable[Change]) -> set[int]:
    """The pages a write of ``changes`` reads and rewrites."""
    return {head.slot(c.file_id if isinstance(c, IndexEntry) else c) for c in changes}


def plan(
    head: IndexHead, loaded: Mapping[int, tuple[IndexEntry, ...]], changes: Sequence[Change]
) -> Plan:
    """Apply ``changes`` in order to the pages they touch (``loaded``: the entries of every
    page in ``slots(head, changes)``) and cut the changed runs of pages again."""
    touched = slots(head, changes)
    by_slot: dict[int, list[Change]] = {}
    for c in changes:
        by_slot.setdefault(head.slot(c.file_id if isinstance(c, IndexEntry) else c), []).append(c)
    made = 0
    after: dict[int, tuple[IndexEntry, ...]] = {}
    for s, ops in by_slot.items():
        before = loaded[s] if head.pages else ()
        changed = FileIndex(head.owner, 0, before).apply(ops)
        made += changed.counter
        after[s] = changed.entries
    layout: list[PageRef | tuple[IndexEntry, ...]] = []
    dropped: list[PageRef] = []
    run: list[IndexEntry] = []
    count = max(1, len(head.pages))
    for s in range(count):
        if s in touched and after[s] != (loaded[s] if head.pages else ()):
            run.extend(after[s])
            if head.pages:
                dropped.append(head.pages[s])
            continue
        layout.extend(split(run))
        run = []
        if head.pages:
            layout.append(head.pages[s])
    layout.extend(split(run))
    if len(layout) > MAX_PAGES:
        raise UsageError(
            f"the file index holds at most {MAX_PAGES:,} pages (MAX_PAGES): remove some files"
        )
    return Plan(made, tuple(layout), tuple(dropped))


def retire(
    head: IndexHead, dropped: Sequence[PageRef], now: int
) -> tuple[tuple[Retired, ...], tuple[bytes, ...]]:
    """The next head's retired list and the names of the pages to delete now: those retired
    ``RETIRE_AFTER`` seconds ago, or pushed out of the list by ``MAX_RETIRED`` newer ones."""
    listed = list(head.retired) + [Retired(p.name, now) for p in dropped]
    due = [r for r in listed if now - r.since >= RETIRE_AFTER]
    keep = [r for r in listed if now - r.since < RETIRE_AFTER]
    if len(keep) > MAX_RETIRED:
        due += keep[: len(keep) - MAX_RETIRED]
        keep = keep[len(keep) - MAX_RETIRED :]
    return tuple(keep), tuple(r.name for r in due)
