"""The file index, format 2: golden vector (read again with the primitives alone), writes of
any changes matching ``FileIndex.apply`` while keeping every page they do not touch, page
sizes, retirement, and one test per check a reader makes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from nuclux.core.file_index import Change, FileIndex, index_key
from nuclux.core.index_entries import MAX_ENTRIES, IndexEntry, encode_entry
from nuclux.core.index_tree import (
    MAX_PAGES,
    MAX_RETIRED,
    PAGE_BYTES,
    PAGE_OVERHEAD,
    RETIRE_AFTER,
    IndexHead,
    PageRef,
    Plan,
    Retired,
    join,
    open_head,
    open_page,
    page_name,
    plan,
    retire,
    seal_head,
    seal_page,
    slots,
    split,
)
from nuclux.core.index_tree import sealed_head as seal_with_digest
from nuclux.core.types import LeaseId
from nuclux.errors import IntegrityError, UsageError
from tests.core.index_kit import entries_from_json

VECTOR: dict[str, Any] = json.loads(
    (Path(__file__).parent / "vectors" / "file_index_v2.json").read_text(encoding="utf-8")
)
OWNER = VECTOR["owner"]
KEY = index_key(bytes.fromhex(VECTOR["x25519_private"]), OWNER)
OTHER = "0x" + "22" * 20


def entries_of(page: dict[str, Any]) -> tuple[IndexEntry, ...]:
    return entries_from_json(page["entries"])


def entry(i: int, name: str = "file {i}", **changes: Any) -> IndexEntry:
    fid = hashlib.sha256(b"tree/%d" % i).digest()[:16]
    e = IndexEntry(fid, name.format(i=i), i, 1_700_000_000, 1, (LeaseId(7), LeaseId(9)))
    return dataclasses.replace(e, **changes)


def nonce() -> bytes:
    return os.urandom(12)


class Store:
    """Writes a plan as the SDK does: new pages sealed and kept by name, a new head."""

    def __init__(self) -> None:
        self.objects: dict[bytes, bytes] = {}
        self.head = IndexHead(FileIndex(OWNER, 0).owner, 0, 0, ())

    def write(self, changes: list[Change]) -> Plan:
        loaded = {
            s: open_page(
                self.objects[self.head.pages[s].name], self.head.pages[s], owner=OWNER, key=KEY
            )
            for s in slots(self.head, changes)
            if self.head.pages
        }
        planned = plan(self.head, loaded, changes)
        if not planned.made:  # as the SDK: nothing changed, nothing written
            return planned
        refs = []
        for page in planned.layout:
            if isinstance(page, PageRef):
                refs.append(page)
            else:
                ref, sealed = seal_page(OWNER, page, key=KEY, nonce=nonce())
                self.objects[ref.name] = sealed
                refs.append(ref)
        head = IndexHead(self.head.owner, self.head.counter + planned.made, 0, tuple(refs))
        self.head = open_head(seal_head(head, key=KEY, nonce=nonce()), owner=OWNER, key=KEY)
        return planned

    def read(self) -> FileIndex:
        pages = [open_page(self.objects[r.name], r, owner=OWNER, key=KEY) for r in self.head.pages]
        return join(self.head, pages)


# -- the golden vector ---------------------------------------------------------------------------


def test_golden_vector() -> None:
    assert KEY.hex() == VECTOR["index_key"]
    refs = []
    for p in VECTOR["pages"]:
        ref, sealed = seal_page(OWNER, entries_of(p), key=KEY, nonce=bytes.fromhex(p["nonce"]))
        assert sealed.hex() == p["sealed"]
        assert (ref.name.hex(), ref.low.hex(), ref.count) == (p["name"], p["low"], p["count"])
        assert open_page(sealed, ref, owner=OWNER, key=KEY) == entries_of(p)
        refs.append(ref)
    retired = tuple(Retired(bytes.fromhex(r["name"]), r["since"]) for r in VECTOR["retired"])
    head = IndexHead(FileIndex(OWNER, 0).owner, 9, VECTOR["written_at"], tuple(refs), retired)
    sealed_head = seal_head(head, key=KEY, nonce=bytes.fromhex(VECTOR["head_nonce"]))
    assert sealed_head.hex() == VECTOR["head"]
    opened = open_head(sealed_head, owner=OWNER, key=KEY)
    assert dataclasses.replace(opened, digest=b"") == head
    with_digest, again = seal_with_digest(head, key=KEY, nonce=bytes.fromhex(VECTOR["head_nonce"]))
    assert (with_digest, again) == (opened, sealed_head)  # the writer knows the reader's digest
    index = join(opened, [entries_of(p) for p in VECTOR["pages"]])
    assert index.counter == 9
    assert len(index.entries) == sum(len(p["entries"]) for p in VECTOR["pages"])


def test_vector_follows_the_spec() -> None:
    """The layouts of docs/spec/manifest.md section 7, read with the primitives alone."""
    aes = AESGCM(bytes.fromhex(VECTOR["index_key"]))
    owner = bytes.fromhex(OWNER[2:])
    for p in VECTOR["pages"]:
        data = bytes.fromhex(p["sealed"])
        assert data[:2] == b"\x02P"
        assert data[2:22] == owner
        assert data[22:34].hex() == p["nonce"]
        plain = aes.decrypt(data[22:34], data[34:], data[:34])
        assert int.from_bytes(plain[:2], "big") == len(p["entries"])
        assert plain[2:18].hex() == p["entries"][0]["file_id"]
        assert hashlib.sha256(data).digest()[:16].hex() == p["name"]
    data = bytes.fromhex(VECTOR["head"])
    assert data[:2] == b"\x02H"
    assert data[2:22] == owner
    assert int.from_bytes(data[22:30], "big") == VECTOR["counter"]
    assert int.from_bytes(data[30:38], "big") == VECTOR["written_at"]
    body = aes.decrypt(data[38:50], data[50:], data[:50])
    assert int.from_bytes(body[:4], "big") == 2
    for i, p in enumerate(VECTOR["pages"]):
        name, low, count = struct.unpack_from(">16s16sH", body, 4 + 34 * i)
        assert (name.hex(), low.hex(), count) == (p["name"], p["low"], p["count"])
    pos = 4 + 2 * 34
    assert int.from_bytes(body[pos : pos + 2], "big") == 1
    name, since = struct.unpack_from(">16sQ", body, pos + 2)
    assert (name.hex(), since) == (VECTOR["retired"][0]["name"], VECTOR["retired"][0]["since"])
    assert len(body) == pos + 2 + 24


# -- writing -------------------------------------------------------------------------------------

changes_st = st.lists(
    st.one_of(
        st.builds(entry, st.integers(0, 3000), st.sampled_from(["f{i}", "é" * 120 + "{i}"])),
        st.integers(0, 3000).map(lambda i: entry(i).file_id),
    ),
    max_size=400,
)


@settings(max_examples=40, deadline=None)
@given(st.lists(changes_st, min_size=1, max_size=5))
def test_any_writes_read_back_as_apply_and_keep_untouched_pages(
    writes: list[list[Change]],
) -> None:
    store = Store()
    expected = FileIndex(OWNER, 0)
    for changes in writes:
        before = store.head
        untouched = {before.pages[s].name for s in range(len(before.pages))} - {
            before.pages[s].name for s in slots(before, changes) if before.pages
        }
        planned = store.write(changes)
        expected = expected.apply(changes)
        assert store.read() == expected
        assert planned.made == expected.counter - before.counter
        names = {r.name for r in store.head.pages}
        assert untouched <= names  # a page no change falls in keeps its name
        assert {r.name for r in planned.dropped} == {r.name for r in before.pages} - names
        for ref in store.head.pages:
            assert len(store.objects[ref.name]) <= PAGE_BYTES


def test_one_new_file_rewrites_one_page() -> None:
    store = Store()
    store.write([entry(i) for i in range(20_000)])
    first = store.head
    assert len(first.pages) > 20
    planned = store.write([entry(50_000)])
    kept = [p for p in planned.layout if isinstance(p, PageRef)]
    assert len(kept) == len(first.pages) - 1
    assert len(planned.dropped) == 1
    assert len(store.head.pages) - len(kept) in (1, 2)  # the page, or its two halves


def test_removing_every_file_leaves_no_page() -> None:
    store = Store()
    store.write([entry(i) for i in range(3000)])
    store.write([entry(i).file_id for i in range(3000)])
    assert store.head.pages == ()
    assert store.read() == FileIndex(OWNER, 6000)
    assert store.write([entry(1).file_id]).made == 0  # removing an absent file changes nothing


def test_split_cuts_into_as_few_pages_of_about_equal_size() -> None:
    usable = PAGE_BYTES - PAGE_OVERHEAD
    many = [entry(i, name="x" * 200) for i in range(2000)]
    many.sort(key=lambda e: e.file_id)
    runs = split(many)
    sizes = [sum(len(encode_entry(e)) for e in run) for run in runs]
    assert len(runs) == -(-sum(sizes) // usable)
    assert max(sizes) <= usable
    assert max(sizes) - min(sizes) <= 2 * len(encode_entry(many[0]))
    assert [e for run in runs for e in run] == many
    tiny = sorted((entry(i, name="") for i in range(2500)), key=lambda e: e.file_id)
    assert max(len(run) for run in split(tiny)) <= MAX_ENTRIES
    assert split([]) == []


def test_more_than_max_pages_is_refused() -> None:
    refs = tuple(PageRef(bytes(16), bytes(16), 216) for _ in range(1)) + tuple(
        PageRef(i.to_bytes(16, "big"), (i << 100).to_bytes(16, "big"), 1)
        for i in range(1, MAX_PAGES)
    )
    head = IndexHead(FileIndex(OWNER, 0).owner, 1, 0, refs)
    full = tuple(entry(0, name="y" * 200, file_id=j.to_bytes(16, "big")) for j in range(216))
    assert len(split(full)) == 1
    one_more = entry(0, name="y" * 200, file_id=(216).to_bytes(16, "big"))
    assert slots(head, [one_more]) == {0}
    with pytest.raises(UsageError, match="MAX_PAGES"):
        plan(head, {0: full}, [one_more])
    with pytest.raises(UsageError, match="MAX_PAGES"):
        seal_head(dataclasses.replace(head, pages=(*refs, refs[-1])), key=KEY, nonce=nonce())


def test_retire_deletes_after_an_hour_or_beyond_the_list() -> None:
    head = IndexHead(FileIndex(OWNER, 0).owner, 1, 0, (), (Retired(b"a" * 16, 1000),))
    dropped = (PageRef(b"b" * 16, bytes(16), 1),)
    kept, due = retire(head, dropped, 1000 + RETIRE_AFTER - 1)
    assert due == ()
    assert [r.name for r in kept] == [b"a" * 16, b"b" * 16]
    kept, due = retire(head, dropped, 1000 + RETIRE_AFTER)
    assert due == (b"a" * 16,)
    assert kept == (Retired(b"b" * 16, 1000 + RETIRE_AFTER),)
    many = tuple(Retired(i.to_bytes(16, "big"), 5000) for i in range(MAX_RETIRED))
    kept, due = retire(dataclasses.replace(head, retired=many), dropped, 5001)
    assert due == (many[0].name,)  # the oldest goes early, never the list past its bound
    assert len(kept) == MAX_RETIRED


# -- reading -------------------------------------------------------------------------------------


def written(n: int = 600) -> Store:
    store = Store()
    store.write([entry(i, name="n" * 100 + "{i}") for i in range(n)])
    assert len(store.head.pages) >= 2
    return store


def test_every_flipped_byte_of_a_head_or_page_is_refused() -> None:
    store = written()
    head = seal_head(store.head, key=KEY, nonce=nonce())
    for i in range(len(head)):
        bad = bytearray(head)
        bad[i] ^= 0x01
        with pytest.raises((IntegrityError, UsageError)):
            open_head(bytes(bad), owner=OWNER, key=KEY)
    ref = store.head.pages[0]
    page = store.objects[ref.name]
    for i in range(0, len(page), 7):
        bad = bytearray(page)
        bad[i] ^= 0x80
        with pytest.raises((IntegrityError, UsageError)):
            open_page(bytes(bad), ref, owner=OWNER, key=KEY)


def test_a_page_is_accepted_only_where_its_head_names_it() -> None:
    store = written()
    a, b = store.head.pages[:2]
    with pytest.raises(IntegrityError, match="do not match its name"):
        open_page(store.objects[b.name], a, owner=OWNER, key=KEY)
    # a page sealed by the owner under another head's reference: count and first id checked
    with pytest.raises(IntegrityError, match="its head says"):
        open_page(
            store.objects[a.name], dataclasses.replace(a, count=a.count + 1), owner=OWNER, key=KEY
        )
    pages = [open_page(store.objects[r.name], r, owner=OWNER, key=KEY) for r in store.head.pages]
    with pytest.raises(IntegrityError, match="reaches past"):  # pages given out of order
        join(store.head, [pages[1], pages[0], *pages[2:]])
    with pytest.raises(UsageError, match="names"):
        join(store.head, pages[1:])


def test_kinds_and_accounts_do_not_mix() -> None:
    store = written()
    head = seal_head(store.head, key=KEY, nonce=nonce())
    ref = store.head.pages[0]
    page = store.objects[ref.name]
    with pytest.raises(UsageError, match="not a format 2 file index page"):
        open_page(
            head[:PAGE_BYTES], dataclasses.replace(ref, name=page_name(head)), owner=OWNER, key=KEY
        )
    with pytest.raises(UsageError, match="not a format 2 file index head"):
        open_head(page, owner=OWNER, key=KEY)
    with pytest.raises(IntegrityError, match="belongs to"):
        open_head(head, owner=OTHER, key=KEY)
    other_key = index_key(bytes(32), OWNER)
    with pytest.raises(IntegrityError, match="does not open"):
        open_head(head, owner=OWNER, key=other_key)


def test_sealing_checks_its_inputs() -> None:
    owner = FileIndex(OWNER, 0).owner
    with pytest.raises(UsageError, match="at least one entry"):
        seal_page(OWNER, (), key=KEY, nonce=nonce())
    with pytest.raises(UsageError, match="sorted"):
        seal_page(OWNER, (entry(2), entry(2)), key=KEY, nonce=nonce())
    with pytest.raises(UsageError, match="nonce"):
        seal_page(OWNER, (entry(2),), key=KEY, nonce=b"short")
    with pytest.raises(UsageError, match="counter"):
        seal_head(IndexHead(owner, 0, 0, ()), key=KEY, nonce=nonce())
    ref = PageRef(bytes(16), bytes(16), 0)
    with pytest.raises(UsageError, match="entries"):
        seal_head(IndexHead(owner, 1, 0, (ref,)), key=KEY, nonce=nonce())
    twice = (PageRef(bytes(16), bytes(16), 1), PageRef(bytes(16), bytes(16), 1))
    with pytest.raises(UsageError, match="increasing"):
        seal_head(IndexHead(owner, 1, 0, twice), key=KEY, nonce=nonce())
