"""The paged file index: golden vector (read again with the primitives alone), round trips of
0..3000 files, the writer's page size, and one test per rule a reader checks before it
accepts a set of pages."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from nuclux.core.auth import to_address
from nuclux.core.batch import MAX_BATCH_BYTES, encode_batch
from nuclux.core.file_index import (
    MAX_ENTRIES,
    MAX_LOCATORS,
    MAX_PAGES,
    PAGE_BYTES,
    FileIndex,
    IndexEntry,
    IndexPage,
    encode_entries,
    index_key,
    join_pages,
    open_index,
    open_page,
    seal_index,
    seal_page,
    seal_pages,
)
from nuclux.core.index_entries import MAX_ENTRY_BYTES, encode_entry
from nuclux.core.reference import index_object_id
from nuclux.core.types import Address, LeaseId
from nuclux.errors import IntegrityError, UsageError
from nuclux.keys.derive import from_mnemonic
from tests.core.index_kit import entries_from_json

VECTOR: dict[str, Any] = json.loads(
    (Path(__file__).parent / "vectors" / "file_index_pages.json").read_text(encoding="utf-8")
)
OWNER = VECTOR["owner"]
X = bytes.fromhex(VECTOR["x25519_private"])
WRITE_ID = bytes.fromhex(VECTOR["write_id"])
OTHER_ID = bytes(range(8))
HEADER = 45  # version 1, owner 20, page 2, pages 2, counter 8, nonce 12


def entry(i: int, **changes: Any) -> IndexEntry:
    e = IndexEntry(i.to_bytes(16, "big"), f"file {i}", i, 1_700_000_000, 1, (LeaseId(7),))
    return dataclasses.replace(e, **changes)


def largest(i: int) -> IndexEntry:
    """An entry of ``MAX_ENTRY_BYTES``: 155 of them fill a page."""
    lease = LeaseId(2**256 - 1)
    return entry(i, name="é" * 127 + "x", locators=(lease,) * MAX_LOCATORS, healthy_shares=64)


def vector_entries(page: dict[str, Any]) -> tuple[IndexEntry, ...]:
    return entries_from_json(page["entries"])


def generated(i: int) -> IndexEntry:
    """Entry ``i`` of the vector's writer section (its description gives the rule)."""
    return IndexEntry(
        hashlib.sha256(b"nuclux-test/index-entry/" + str(i).encode()).digest()[:16],
        f"photos/{i:05d}.jpg",
        1000 * i,
        1_700_000_000 + i,
        1 + i % 3,
        (LeaseId(7), LeaseId(11 + i % 5)),
        None if i % 4 == 0 else i % 65,
    )


def opened(sealed: list[bytes]) -> list[IndexPage]:
    return [open_page(s, owner=OWNER, x25519_private=X) for s in sealed]


def three_pages(counter: int = 4, write_id: bytes = WRITE_ID) -> tuple[FileIndex, list[bytes]]:
    index = FileIndex(OWNER, counter, tuple(largest(i) for i in range(2 * 155 + 1)))
    sealed = seal_pages(index, x25519_private=X, write_id=write_id)
    assert len(sealed) == 3
    return index, sealed


def test_golden_vector() -> None:
    pages = []
    for p in VECTOR["pages"]:
        page = IndexPage(OWNER, VECTOR["counter"], p["page"], 2, WRITE_ID, vector_entries(p))
        assert encode_entries(page.entries).hex() == p["plaintext"]
        assert seal_page(page, x25519_private=X).hex() == p["sealed"]
        assert open_page(bytes.fromhex(p["sealed"]), owner=OWNER, x25519_private=X) == page
        pages.append(page)
    index = join_pages(reversed(pages))
    assert index == FileIndex(OWNER, VECTOR["counter"], pages[0].entries + pages[1].entries)
    assert index_key(X, OWNER).hex() == VECTOR["index_key"]


def test_vector_follows_the_spec() -> None:
    tag = b"nuclux/file-index/v1"
    for p in VECTOR["pages"]:
        data = bytes.fromhex(p["sealed"])
        assert data[0] == 1
        assert to_address(data[1:21]) == OWNER
        assert data[21:23] == p["page"].to_bytes(2, "big")
        assert data[23:25] == (2).to_bytes(2, "big")
        assert int.from_bytes(data[25:33], "big") == VECTOR["counter"]
        assert data[33:45] == WRITE_ID + p["page"].to_bytes(4, "big") == bytes.fromhex(p["nonce"])
        info = len(tag).to_bytes(2, "big") + tag + data[1:21]
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"", info=info).derive(X)
        plaintext = AESGCM(key).decrypt(data[33:45], data[45:], data[:45])
        assert plaintext.hex() == p["plaintext"]
        assert int.from_bytes(plaintext[:2], "big") == len(p["entries"])


def test_writer_vector() -> None:
    w = VECTOR["writer"]
    entries = tuple(sorted((generated(i) for i in range(w["count"])), key=lambda e: e.file_id))
    sealed = seal_pages(
        FileIndex(OWNER, VECTOR["counter"], entries), x25519_private=X, write_id=WRITE_ID
    )
    assert [len(s) for s in sealed] == w["page_bytes"]
    assert [hashlib.sha256(s).hexdigest() for s in sealed] == w["sealed_sha256"]
    assert [len(p.entries) for p in opened(sealed)] == w["page_entries"]
    assert join_pages(opened(sealed)).entries == entries


def test_the_single_page_vector_is_what_seal_pages_writes_for_a_small_index() -> None:
    single = json.loads(
        (Path(__file__).parent / "vectors" / "file_index.json").read_text(encoding="utf-8")
    )
    sealed = bytes.fromhex(single["sealed"])
    page = open_page(sealed, owner=OWNER, x25519_private=X)  # a lone page: any nonce
    assert (page.page, page.pages, page.counter) == (0, 1, single["counter"])
    assert join_pages([page]) == open_index(sealed, owner=OWNER, x25519_private=X)
    nonce = bytes.fromhex(single["nonce"])
    index = join_pages([page])
    ours = seal_pages(index, x25519_private=X, write_id=nonce[:8])
    assert len(ours) == 1
    assert ours[0] == seal_index(index, x25519_private=X, nonce=nonce[:8] + bytes(4))


@st.composite
def indexes(draw: st.DrawFn) -> FileIndex:
    count = draw(st.integers(0, 3000))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    longest = draw(st.sampled_from([0, 8, 63]))
    alphabet = "abcXYZ019 ._-/éß日本😀"
    ids = sorted({rng.randbytes(16) for _ in range(count)})
    entries = tuple(
        IndexEntry(
            fid,
            "".join(rng.choice(alphabet) for _ in range(rng.randint(0, longest))),
            rng.randrange(2**64),
            rng.randrange(2**64),
            rng.randint(1, 2**32 - 1),
            tuple(LeaseId(rng.randint(1, 2**256 - 1)) for _ in range(rng.randint(1, 4))),
            rng.choice([None, rng.randint(0, 64)]),
        )
        for fid in ids
    )
    return FileIndex(OWNER, draw(st.integers(1, 2**64 - 1)), entries)


@settings(max_examples=30, deadline=None)
@given(index=indexes(), write_id=st.binary(min_size=8, max_size=8), seed=st.integers(0, 99))
def test_round_trip(index: FileIndex, write_id: bytes, seed: int) -> None:
    sealed = seal_pages(index, x25519_private=X, write_id=write_id)
    pages = opened(sealed)
    assert 1 <= len(sealed) <= MAX_PAGES
    for p, (data, page) in enumerate(zip(sealed, pages, strict=True)):
        assert len(data) <= PAGE_BYTES
        assert data[33:45] == write_id + p.to_bytes(4, "big")
        assert (page.page, page.pages, page.counter) == (p, len(sealed), index.counter)
        assert page.write_id == write_id
        assert page.entries or len(sealed) == 1
        if p + 1 < len(sealed):  # each page is filled: the next entry would not have fitted
            spill = len(encode_entry(pages[p + 1].entries[0]))
            assert len(data) + spill > PAGE_BYTES or len(page.entries) == MAX_ENTRIES
    random.Random(seed).shuffle(pages)  # pages arrive in any order
    assert join_pages(pages) == index


def test_an_empty_index_is_one_empty_page() -> None:
    sealed = seal_pages(FileIndex(OWNER, 1), x25519_private=X, write_id=WRITE_ID)
    assert len(sealed) == 1
    assert len(sealed[0]) == HEADER + 2 + 16
    assert join_pages(opened(sealed)) == FileIndex(OWNER, 1)


def test_the_largest_index_fits_one_object_batch() -> None:
    full = [(index_object_id(p), bytes(PAGE_BYTES)) for p in range(MAX_PAGES)]
    assert len(encode_batch(full)) <= MAX_BATCH_BYTES
    with pytest.raises(UsageError, match="a batch is at most"):
        encode_batch([*full, (index_object_id(MAX_PAGES), bytes(PAGE_BYTES))])
    index = FileIndex(OWNER, 1, tuple(largest(i) for i in range(MAX_PAGES * 155)))
    sealed = seal_pages(index, x25519_private=X, write_id=WRITE_ID)
    assert len(sealed) == MAX_PAGES
    assert all(len(s) == HEADER + 2 + 155 * MAX_ENTRY_BYTES + 16 for s in sealed)
    assert join_pages(opened(sealed)) == index


def test_more_than_max_pages_is_refused() -> None:
    too_many = FileIndex(OWNER, 1, tuple(largest(i) for i in range(MAX_PAGES * 155 + 1)))
    with pytest.raises(UsageError, match=r"at most 63 pages .*need 64: remove some files"):
        seal_pages(too_many, x25519_private=X, write_id=WRITE_ID)
    beyond = IndexPage(OWNER, 1, 0, MAX_PAGES + 1, WRITE_ID, (entry(1),))
    with pytest.raises(UsageError, match=r"1\.\.63 pages"):
        open_page(seal_page(beyond, x25519_private=X), owner=OWNER, x25519_private=X)
    pages = [dataclasses.replace(beyond, page=p, entries=(entry(p),)) for p in range(64)]
    with pytest.raises(UsageError, match=r"1\.\.63 pages, not 64"):
        join_pages(pages)


def test_a_missing_page_is_refused() -> None:
    _, sealed = three_pages()
    pages = opened(sealed)
    with pytest.raises(IntegrityError, match=r"pages \[1\] are missing"):
        join_pages([pages[0], pages[2]])
    with pytest.raises(IntegrityError, match=r"pages \[2\] are missing"):
        join_pages(pages[:2])  # a torn copy is never taken for a shorter index


def test_a_duplicate_page_is_refused() -> None:
    _, sealed = three_pages()
    pages = opened(sealed)
    with pytest.raises(IntegrityError, match=r"\[1\] repeated"):
        join_pages([*pages, pages[1]])


def test_pages_of_two_writes_with_the_same_counter_are_refused() -> None:
    index, mine = three_pages(counter=4)
    theirs = dataclasses.replace(index, entries=(*index.entries[:-1], largest(999)))
    other = seal_pages(theirs, x25519_private=X, write_id=OTHER_ID)  # another device, also 4
    mixed = opened(mine)[:2] + opened(other)[2:]
    assert [p.counter for p in mixed] == [4, 4, 4]
    with pytest.raises(IntegrityError, match="two writes"):
        join_pages(mixed)  # without the write id this would join into an index nobody wrote
    assert join_pages(opened(other)) == theirs


def test_a_counter_mismatch_is_refused() -> None:
    _, older = three_pages(counter=4)
    _, newer = three_pages(counter=5)  # the same write id: only the counter differs
    with pytest.raises(IntegrityError, match="two writes"):
        join_pages([*opened(newer)[:2], opened(older)[2]])


def test_a_renumbered_page_fails_authentication() -> None:
    _, sealed = three_pages()
    for position, value in ((21, 2), (23, 4)):  # page 1 as page 2; 3 pages as 4
        bad = bytearray(sealed[1])
        bad[position : position + 2] = value.to_bytes(2, "big")
        with pytest.raises(IntegrityError, match="does not open"):
            open_page(bytes(bad), owner=OWNER, x25519_private=X)
    swapped = sealed[2][:33] + sealed[1][33:]  # page 1's nonce and body under page 2's header
    with pytest.raises(IntegrityError, match="does not open"):
        open_page(swapped, owner=OWNER, x25519_private=X)


def test_a_page_of_another_account_is_refused() -> None:
    other = from_mnemonic("abandon " * 11 + "about", index=1)
    theirs = seal_pages(
        FileIndex(Address(other.address), 4, tuple(largest(i) for i in range(200))),
        x25519_private=other.x25519_private,
        write_id=WRITE_ID,
    )
    with pytest.raises(IntegrityError, match="belongs to"):
        open_page(theirs[1], owner=OWNER, x25519_private=X)
    forged = theirs[1][:1] + bytes.fromhex(OWNER[2:]) + theirs[1][21:]
    with pytest.raises(IntegrityError, match="does not open"):
        open_page(forged, owner=OWNER, x25519_private=X)
    _, mine = three_pages()
    their_pages = [
        open_page(s, owner=other.address, x25519_private=other.x25519_private) for s in theirs
    ]
    with pytest.raises(IntegrityError, match="two accounts"):
        join_pages([opened(mine)[0], their_pages[1], opened(mine)[2]])


def test_an_empty_page_in_a_paged_index_is_refused() -> None:
    pages = [
        IndexPage(OWNER, 4, 0, 3, WRITE_ID, (entry(1),)),
        IndexPage(OWNER, 4, 1, 3, WRITE_ID, ()),
        IndexPage(OWNER, 4, 2, 3, WRITE_ID, (entry(3),)),
    ]
    empty = seal_page(pages[1], x25519_private=X)
    with pytest.raises(UsageError, match="page 1 of 3: empty"):
        open_page(empty, owner=OWNER, x25519_private=X)
    with pytest.raises(UsageError, match="an empty page"):
        join_pages(pages)
    lone = IndexPage(OWNER, 4, 0, 1, WRITE_ID, ())  # only a lone page 0 may be empty
    assert join_pages([lone]) == FileIndex(OWNER, 4)


def test_file_ids_must_increase_across_pages() -> None:
    pages = [
        IndexPage(OWNER, 4, 0, 2, WRITE_ID, (entry(5), entry(6))),
        IndexPage(OWNER, 4, 1, 2, WRITE_ID, (entry(1), entry(2))),
    ]
    sealed = [seal_page(p, x25519_private=X) for p in pages]
    assert opened(sealed) == pages  # each page alone is well formed
    with pytest.raises(UsageError, match="strictly increase across its pages"):
        join_pages(opened(sealed))
    overlap = dataclasses.replace(pages[1], entries=(entry(6), entry(7)))
    with pytest.raises(UsageError, match="strictly increase"):
        join_pages([pages[0], overlap])


def test_a_nonce_must_end_in_its_page_number() -> None:
    _, sealed = three_pages()
    page = open_page(sealed[1], owner=OWNER, x25519_private=X)
    plain = encode_entries(page.entries)
    header = sealed[1][:33] + WRITE_ID + (2).to_bytes(4, "big")  # page 1 with page 2's nonce
    key = index_key(X, OWNER)
    bad = header + AESGCM(key).encrypt(header[33:], plain, header)
    with pytest.raises(UsageError, match="page 1 of 3: its nonce does not end in its page"):
        open_page(bad, owner=OWNER, x25519_private=X)


def test_a_page_of_a_paged_index_is_at_most_64_kib() -> None:
    big = tuple(largest(i) for i in range(156))  # one more than fits 64 KiB
    alone = seal_index(FileIndex(OWNER, 2, big), x25519_private=X, nonce=WRITE_ID + bytes(4))
    assert len(alone) > PAGE_BYTES
    assert len(open_index(alone, owner=OWNER, x25519_private=X).entries) == 156  # as v1 wrote
    paged = seal_page(IndexPage(OWNER, 2, 0, 2, WRITE_ID, big), x25519_private=X)
    with pytest.raises(UsageError, match="at most 65536 bytes"):
        open_page(paged, owner=OWNER, x25519_private=X)
    assert [
        len(p.entries)
        for p in opened(seal_pages(FileIndex(OWNER, 2, big), x25519_private=X, write_id=WRITE_ID))
    ] == [155, 1]


def test_sealing_checks_its_inputs() -> None:
    index = FileIndex(OWNER, 1, (entry(1),))
    for write_id in (b"short", bytes(9)):
        with pytest.raises(UsageError, match="write id is 8 bytes"):
            seal_pages(index, x25519_private=X, write_id=write_id)
    with pytest.raises(UsageError, match="sorted"):
        seal_pages(FileIndex(OWNER, 1, (entry(2), entry(1))), x25519_private=X, write_id=WRITE_ID)
    with pytest.raises(UsageError, match="counter"):
        seal_pages(FileIndex(OWNER, 0), x25519_private=X, write_id=WRITE_ID)
    with pytest.raises(UsageError, match="u16"):
        seal_page(IndexPage(OWNER, 1, 2**16, 2**16, WRITE_ID, ()), x25519_private=X)
    with pytest.raises(UsageError, match="no file index pages"):
        join_pages([])
