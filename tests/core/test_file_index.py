"""The file index: golden vector (read again with the primitives alone), the same files on
every device with the phrase, wrong account, every flipped byte, rollback choice, bounds,
changes applied in one pass as one by one. Paging: ``test_file_index_pages.py``."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from nuclux.core.auth import to_address
from nuclux.core.file_index import (
    MAX_ENTRIES,
    MAX_INDEX_BYTES,
    MAX_LOCATORS,
    FileIndex,
    IndexEntry,
    decode_entries,
    empty_index,
    encode_entries,
    index_key,
    newest,
    open_index,
    seal_index,
)
from nuclux.core.reference import Reference
from nuclux.core.types import LeaseId
from nuclux.errors import IntegrityError, UsageError
from nuclux.keys.derive import from_mnemonic
from tests.core.index_kit import entries_from_json

VECTOR: dict[str, Any] = json.loads(
    (Path(__file__).parent / "vectors" / "file_index.json").read_text(encoding="utf-8")
)
OWNER = VECTOR["owner"]
X = bytes.fromhex(VECTOR["x25519_private"])
SEALED = bytes.fromhex(VECTOR["sealed"])
NONCE = bytes.fromhex(VECTOR["nonce"])
PHRASE = "abandon " * 11 + "about"


def entries_from_vector() -> tuple[IndexEntry, ...]:
    return entries_from_json(VECTOR["entries"])


def entry(i: int, **changes: Any) -> IndexEntry:
    e = IndexEntry(i.to_bytes(16, "big"), f"file {i}", i, 1_700_000_000, 1, (LeaseId(7),))
    return dataclasses.replace(e, **changes)


def test_golden_vector() -> None:
    index = FileIndex(OWNER, VECTOR["counter"], entries_from_vector())
    assert seal_index(index, x25519_private=X, nonce=NONCE) == SEALED
    assert open_index(SEALED, owner=OWNER, x25519_private=X) == index
    assert encode_entries(index.entries).hex() == VECTOR["plaintext"]
    assert index_key(X, OWNER).hex() == VECTOR["index_key"]
    first = index.entries[0]
    assert str(index.reference(first)) == str(Reference(OWNER, first.file_id))
    assert first.healthy_shares == 3
    assert index.entries[1].healthy_shares is None


def test_vector_follows_the_spec() -> None:
    data = SEALED
    assert data[0] == 1
    assert to_address(data[1:21]) == OWNER
    assert data[21:25] == bytes([0, 0, 0, 1])  # page 0 of 1
    assert int.from_bytes(data[25:33], "big") == VECTOR["counter"]
    assert data[33:45] == NONCE
    tag = b"nuclux/file-index/v1"
    info = len(tag).to_bytes(2, "big") + tag + data[1:21]
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"", info=info).derive(X)
    assert key.hex() == VECTOR["index_key"]
    plaintext = AESGCM(key).decrypt(data[33:45], data[45:], data[:45])
    assert plaintext.hex() == VECTOR["plaintext"]
    assert int.from_bytes(plaintext[:2], "big") == 2


def test_every_device_with_the_phrase_sees_the_same_files() -> None:
    laptop, phone = from_mnemonic(PHRASE), from_mnemonic(PHRASE)
    index = empty_index(laptop.address).put(entry(1)).put(entry(2))
    assert index.counter == 2
    stored = seal_index(index, x25519_private=laptop.x25519_private, nonce=NONCE)
    assert open_index(stored, owner=phone.address, x25519_private=phone.x25519_private) == index
    other = from_mnemonic(PHRASE, index=1)
    with pytest.raises(IntegrityError, match="belongs to"):
        open_index(stored, owner=other.address, x25519_private=other.x25519_private)
    with pytest.raises(IntegrityError, match="not this account's"):
        open_index(stored, owner=laptop.address, x25519_private=other.x25519_private)


def test_every_flipped_byte_is_refused() -> None:
    for position in range(len(SEALED)):
        for mask in (0x01, 0x80):
            bad = bytearray(SEALED)
            bad[position] ^= mask
            error = UsageError if position == 0 else IntegrityError
            with pytest.raises(error):
                open_index(bytes(bad), owner=OWNER, x25519_private=X)


def test_truncated_or_extended_is_refused() -> None:
    for cut in range(len(SEALED)):
        with pytest.raises((IntegrityError, UsageError)):
            open_index(SEALED[:cut], owner=OWNER, x25519_private=X)
    with pytest.raises(IntegrityError):
        open_index(SEALED + b"\x00", owner=OWNER, x25519_private=X)
    with pytest.raises(UsageError, match="malformed file index"):
        open_index(SEALED + bytes(MAX_INDEX_BYTES), owner=OWNER, x25519_private=X)


def _sealed_raw(
    plaintext: bytes, page: int = 0, pages: int = 1, counter: int = 1, nonce: bytes = NONCE
) -> bytes:
    """Seal arbitrary bytes with the account's key: what the decoder refuses after the tag."""
    header = bytes([1]) + bytes.fromhex(OWNER[2:]) + page.to_bytes(2, "big")
    header += pages.to_bytes(2, "big") + counter.to_bytes(8, "big") + nonce
    return header + AESGCM(index_key(X, OWNER)).encrypt(nonce, plaintext, header)


def test_decoding_checks_what_the_account_sealed() -> None:
    good = encode_entries((entry(1), entry(2)))
    assert open_index(_sealed_raw(good), owner=OWNER, x25519_private=X).entries == (
        entry(1),
        entry(2),
    )
    one, two = encode_entries((entry(1),))[2:], encode_entries((entry(2),))[2:]
    for message, plaintext in {
        "sorted": b"\x00\x02" + two + one,
        "sorted ": b"\x00\x02" + one + one,
        "trailing": b"\x00\x01" + one + two,
        "truncated": b"\x00\x03" + one + two,
        "at most 1024": (MAX_ENTRIES + 1).to_bytes(2, "big"),
        "not UTF-8": b"\x00\x01" + one[:-7] + b"\x06\xff" + b"ile 1",
        "healthy shares": b"\x00\x01" + one[:36] + b"\x41" + one[37:],
        "locators": b"\x00\x01" + one[:37] + b"\x00" + one[70:],
        "manifest version": b"\x00\x01" + one[:32] + bytes(4) + one[36:],
    }.items():
        with pytest.raises(UsageError, match=message.strip()):
            open_index(_sealed_raw(plaintext), owner=OWNER, x25519_private=X)
    one_of_two = _sealed_raw(good, page=1, pages=2, nonce=NONCE[:8] + (1).to_bytes(4, "big"))
    with pytest.raises(UsageError, match="page 1 of 2: a paged index is read whole"):
        open_index(one_of_two, owner=OWNER, x25519_private=X)  # never a part for the whole
    with pytest.raises(UsageError, match="counter 0"):
        open_index(_sealed_raw(good, counter=0), owner=OWNER, x25519_private=X)
    with pytest.raises(UsageError, match="unknown file index version"):
        open_index(b"\x02" + SEALED[1:], owner=OWNER, x25519_private=X)


def test_newest_copy_wins() -> None:
    base = empty_index(OWNER).put(entry(1))
    later = base.put(entry(2))
    assert newest([later, base]) == newest([base, later]) == later
    rival = base.put(entry(3))  # another device wrote at the same time
    assert rival.counter == later.counter
    assert newest([later, rival]) == newest([rival, later])
    with pytest.raises(UsageError):
        newest([])


def test_newest_breaks_ties_between_indexes_of_more_than_1024_files() -> None:
    many = tuple(entry(i) for i in range(3000))
    one = FileIndex(OWNER, 7, many)
    other = FileIndex(OWNER, 7, (*many[:-1], entry(2999, name="renamed")))
    assert newest([one, other]) is newest([other, one])
    assert newest([one, other, FileIndex(OWNER, 8, many[:5])]).counter == 8
    small = FileIndex(OWNER, 3, (entry(1),))  # up to 1024 files: as the first version chose
    rival = FileIndex(OWNER, 3, (entry(2),))
    expected = max((small, rival), key=lambda i: hashlib.sha256(encode_entries(i.entries)).digest())
    assert newest([small, rival]) is newest([rival, small]) is expected


def test_put_get_remove() -> None:
    index = empty_index(OWNER.lower())
    assert index.owner == OWNER
    index = index.put(entry(3)).put(entry(1)).put(entry(2))
    assert [e.file_id[-1] for e in index.entries] == [1, 2, 3]
    index = index.put(entry(2, name="renamed", manifest_version=2))
    got = index.get((2).to_bytes(16, "big"))
    assert got is not None
    assert got.name == "renamed"
    assert index.get(bytes(16)) is None
    index = index.remove((1).to_bytes(16, "big"))
    assert index.counter == 5
    assert len(index.entries) == 2
    with pytest.raises(UsageError, match="no file"):
        index.remove((1).to_bytes(16, "big"))


entries_st = st.builds(
    IndexEntry,
    st.binary(min_size=16, max_size=16),
    st.text(max_size=40).filter(lambda s: all(c.isprintable() for c in s)),
    st.integers(0, 2**64 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(1, 2**32 - 1),
    st.lists(st.integers(1, 2**256 - 1).map(LeaseId), min_size=1, max_size=MAX_LOCATORS).map(tuple),
    st.none() | st.integers(0, 64),
)


@settings(max_examples=40)
@given(entries=st.lists(entries_st, max_size=10, unique_by=lambda e: e.file_id))
def test_round_trip(entries: list[IndexEntry]) -> None:
    index = FileIndex(OWNER, 1, tuple(sorted(entries, key=lambda e: e.file_id)))
    assert decode_entries(encode_entries(index.entries)) == index.entries
    sealed = seal_index(index, x25519_private=X, nonce=NONCE)
    assert open_index(sealed, owner=OWNER, x25519_private=X) == index


@settings(max_examples=300)
@given(
    entries=st.lists(entries_st, min_size=1, max_size=4, unique_by=lambda e: e.file_id),
    edits=st.lists(st.tuples(st.integers(0, 2000), st.integers(0, 255)), min_size=1, max_size=3),
    cut=st.integers(-3, 3),
)
def test_whatever_decodes_is_canonical(
    entries: list[IndexEntry], edits: list[tuple[int, int]], cut: int
) -> None:
    """Decoding checks bounds where it reads them instead of re-encoding: any page it accepts
    (here, a valid page with bytes changed and its end moved) encodes back to the same bytes."""
    page = bytearray(encode_entries(tuple(sorted(entries, key=lambda e: e.file_id))))
    for at, value in edits:
        page[at % len(page)] = value
    raw = bytes(page[: len(page) + cut] if cut < 0 else page + bytes(cut))
    try:
        decoded = decode_entries(raw)
    except UsageError:
        return
    assert encode_entries(decoded) == raw


def test_control_characters_are_exactly_unicode_cc() -> None:
    import unicodedata

    from nuclux.core.manifest import _CONTROL

    for code in range(0x110000):
        c = chr(code)
        assert bool(_CONTROL.match(c)) == (unicodedata.category(c) == "Cc"), hex(code)


def test_bounds() -> None:
    big = tuple(
        entry(
            i,
            name="é" * 127 + "x",
            locators=(LeaseId(2**256 - 1),) * MAX_LOCATORS,
            size=2**64 - 1,
        )
        for i in range(MAX_ENTRIES)
    )
    sealed = seal_index(FileIndex(OWNER, 2**64 - 1, big), x25519_private=X, nonce=NONCE)
    assert len(sealed) == MAX_INDEX_BYTES == 432_191
    assert len(open_index(sealed, owner=OWNER, x25519_private=X).entries) == MAX_ENTRIES
    too_many = (*big, entry(MAX_ENTRIES))
    with pytest.raises(UsageError, match=r"at most 1024 files .*seal_pages"):
        seal_index(FileIndex(OWNER, 1, too_many), x25519_private=X, nonce=NONCE)
    bads: list[dict[str, Any]] = [
        {"file_id": b"short"},
        {"name": "x" * 256},
        {"name": "tab\there"},
        {"size": -1},
        {"manifest_version": 0},
        {"locators": ()},
        {"locators": (LeaseId(1),) * (MAX_LOCATORS + 1)},
        {"locators": (LeaseId(0),)},
        {"healthy_shares": 65},
        {"healthy_shares": 255},
    ]
    for changes in bads:
        with pytest.raises(UsageError):
            encode_entries((entry(1, **changes),))
    with pytest.raises(UsageError, match="sorted"):
        encode_entries((entry(2), entry(1)))
    for counter in (0, 2**64):
        with pytest.raises(UsageError):
            seal_index(FileIndex(OWNER, counter), x25519_private=X, nonce=NONCE)
    with pytest.raises(UsageError):
        seal_index(FileIndex(OWNER, 1), x25519_private=X, nonce=b"short")
    with pytest.raises(UsageError):
        index_key(b"short", OWNER)


changes_st = st.lists(
    st.integers(0, 30).map(lambda i: i.to_bytes(16, "big"))
    | st.builds(lambda i, v: entry(i, manifest_version=v), st.integers(0, 30), st.integers(1, 3)),
    max_size=40,
)


@settings(max_examples=200)
@given(start=st.sets(st.integers(0, 30), max_size=20), changes=changes_st, cut=st.integers(0, 40))
def test_apply_is_put_and_remove_one_by_one(
    start: set[int], changes: list[IndexEntry | bytes], cut: int
) -> None:
    index = FileIndex(OWNER, 3, tuple(entry(i) for i in sorted(start)))
    model = {e.file_id: e for e in index.entries}  # the plain meaning of each change
    counter = index.counter
    for change in changes:
        if isinstance(change, IndexEntry):
            model[change.file_id] = change
            counter += 1
        elif model.pop(change, None) is not None:
            counter += 1
    applied = index.apply(changes)
    assert applied.entries == tuple(model[k] for k in sorted(model))
    assert applied.counter == counter
    assert index.apply(changes[:cut]).apply(changes[cut:]) == applied  # incremental = whole
    for i in range(31):
        fid = i.to_bytes(16, "big")
        assert applied.get(fid) == model.get(fid)
