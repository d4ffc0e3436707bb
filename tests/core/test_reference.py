"""References and object ids: golden vector, round trips, case folding, typos, strict parsing."""

from __future__ import annotations

import base64
import hashlib
import json
import string
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nuclux.core.auth import to_address
from nuclux.core.reference import (
    REFERENCE_CHARS,
    ObjectName,
    Reader,
    Reference,
    block_object_id,
    file_prefix,
    format_reference,
    index_object_id,
    manifest_object_id,
    parse_block_id,
    parse_object_id,
    parse_reference,
    share_prefix,
    timestamp_object_id,
)
from nuclux.core.types import Address
from nuclux.errors import UsageError

VECTOR = json.loads((Path(__file__).parent / "vectors" / "reference.json").read_text())
OWNER = VECTOR["owner"]
FILE_ID = bytes.fromhex(VECTOR["file_id"])
TEXT = VECTOR["text"]
REF = Reference(OWNER, FILE_ID)

addresses = st.binary(min_size=20, max_size=20).map(to_address)
file_ids = st.binary(min_size=16, max_size=16)


def test_golden_vector() -> None:
    assert REF.to_bytes().hex() == VECTOR["binary"]
    assert str(REF) == format_reference(REF) == TEXT
    assert len(TEXT) == REFERENCE_CHARS == 68
    assert parse_reference(TEXT) == REF
    # The spec, step by step: base32 of owner || file id || checksum.
    raw = bytes.fromhex(VECTOR["binary"])
    tag = b"nuclux/reference/v1"
    checksum = hashlib.sha256(len(tag).to_bytes(2, "big") + tag + raw).digest()[:4]
    assert "nux:" + base64.b32encode(raw + checksum).decode().lower() == TEXT
    ids = VECTOR["object_ids"]
    assert file_prefix(FILE_ID).decode() == ids["prefix"]
    assert manifest_object_id(FILE_ID).decode() == ids["manifest"]
    assert block_object_id(FILE_ID, 0, 0).decode() == ids["block_0_0"]
    longest = block_object_id(FILE_ID, 255, 2**32 - 1)
    assert longest.decode() == ids["block_255_4294967295"]
    assert len(longest) == 51  # the longest id of the scheme
    assert share_prefix(FILE_ID, 3).decode() == ids["share_prefix_3"]
    assert timestamp_object_id(FILE_ID, 1).decode() == ids["timestamp_1"]
    assert index_object_id(0).decode() == ids["index_page_0"]


@given(owner=addresses, file_id=file_ids)
def test_round_trip(owner: Address, file_id: bytes) -> None:
    ref = Reference(owner, file_id)
    text = str(ref)
    assert len(text) == REFERENCE_CHARS
    assert parse_reference(text) == ref
    assert parse_reference(f"  {text.upper()}\n") == ref  # case folding, whitespace
    assert Reference.from_bytes(ref.to_bytes()) == ref


def test_owner_is_normalised() -> None:
    assert Reference(OWNER.lower(), FILE_ID) == REF
    assert Reference(OWNER.lower(), FILE_ID).owner == OWNER


@given(
    position=st.integers(4, REFERENCE_CHARS - 1),
    char=st.sampled_from("abcdefghijklmnopqrstuvwxyz234567"),
)
def test_any_typo_is_caught(position: int, char: str) -> None:
    if TEXT[position] == char:
        return
    typo = TEXT[:position] + char + TEXT[position + 1 :]
    with pytest.raises(UsageError, match=r"checksum|malformed"):
        parse_reference(typo)


def test_every_single_character_change_is_caught() -> None:
    for position in range(4, len(TEXT)):
        for char in "a7q":
            if TEXT[position] != char:
                with pytest.raises(UsageError):
                    parse_reference(TEXT[:position] + char + TEXT[position + 1 :])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "must start with"),
        ("nux", "must start with"),
        ("nx:" + TEXT[4:], "must start with"),
        (TEXT[:-1], "exactly 64"),
        (TEXT + "a", "exactly 64"),
        (TEXT[:-1] + "1", "exactly 64"),  # not base32
        (TEXT[:-1] + "=", "exactly 64"),
        (TEXT[:10] + " " + TEXT[11:], "exactly 64"),
        (TEXT[:-2] + TEXT[-1] + TEXT[-2], "checksum"),  # transposition
    ],
)
def test_parse_rejects(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_reference(text)


def test_bad_values() -> None:
    with pytest.raises(UsageError):
        parse_reference(None)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        Reference(OWNER, FILE_ID[:15])
    with pytest.raises(UsageError):
        Reference("alice", FILE_ID)  # type: ignore[arg-type]
    with pytest.raises(UsageError):
        Reference.from_bytes(REF.to_bytes()[:-1])


@given(
    file_id=file_ids,
    index=st.integers(0, 255),
    block=st.integers(0, 2**32 - 1),
    version=st.integers(1, 2**32 - 1),
    page=st.integers(0, 65535),
)
def test_object_ids_round_trip(
    file_id: bytes, index: int, block: int, version: int, page: int
) -> None:
    prefix = file_prefix(file_id)
    block_id = block_object_id(file_id, index, block)
    for oid, name in (
        (manifest_object_id(file_id), ObjectName("manifest", file_id, None)),
        (block_id, ObjectName("block", file_id, index, block)),
        (timestamp_object_id(file_id, version), ObjectName("timestamp", file_id, version)),
    ):
        assert oid.startswith(prefix)
        assert len(oid) <= 64
        assert set(oid.decode()) <= set(string.printable)
        assert parse_object_id(oid) == name
    assert block_id.startswith(share_prefix(file_id, index))
    assert parse_block_id(block_id) == (file_id, index, block)
    assert parse_block_id(manifest_object_id(file_id)) is None
    assert parse_object_id(index_object_id(page)) == ObjectName("index", None, page)


def test_parse_block_id_ignores_other_ids() -> None:
    for oid in (
        b"obj-1",
        b"f/" + b"00" * 16 + b"/s/1",  # the per-share object of earlier drafts
        b"f/" + b"00" * 16 + b"/s/1/01",
        b"f/" + b"00" * 16 + b"/s/1/4294967296",
        b"f/" + b"00" * 16 + b"/t/1",
        b"\xff/s/",
    ):
        assert parse_block_id(oid) is None


def test_a_share_prefix_covers_only_its_blocks() -> None:
    assert not block_object_id(FILE_ID, 12, 0).startswith(share_prefix(FILE_ID, 1))
    assert not share_prefix(FILE_ID, 1).startswith(share_prefix(FILE_ID, 12))
    assert block_object_id(FILE_ID, 1, 20).startswith(share_prefix(FILE_ID, 1))


def test_one_prefix_never_covers_another_file() -> None:
    a, b = bytes(16), bytes(15) + b"\x01"
    assert not manifest_object_id(b).startswith(file_prefix(a))
    assert not file_prefix(a).startswith(file_prefix(b))
    assert not index_object_id(0).startswith(file_prefix(a))


@pytest.mark.parametrize(
    "oid",
    [
        b"",
        b"f/" + b"00" * 16,
        b"f/" + b"00" * 16 + b"/",
        b"f/" + b"00" * 16 + b"/m/1",
        b"f/" + b"AA" * 16 + b"/m",  # upper-case hex
        b"f/" + b"00" * 15 + b"/m",
        b"f/" + b"00" * 16 + b"/s/",
        b"f/" + b"00" * 16 + b"/s/0",  # a share is blocks, not one object
        b"f/" + b"00" * 16 + b"/s/0/",
        b"f/" + b"00" * 16 + b"/s/01/0",  # leading zero
        b"f/" + b"00" * 16 + b"/s/0/01",
        b"f/" + b"00" * 16 + b"/s/256/0",
        b"f/" + b"00" * 16 + b"/s/1000/0",
        b"f/" + b"00" * 16 + b"/s/0/4294967296",
        b"f/" + b"00" * 16 + b"/s/0/10000000000",
        b"f/" + b"00" * 16 + b"/t/0",
        b"f/" + b"00" * 16 + b"/t/4294967296",
        b"f/" + b"00" * 16 + b"/t/",
        b"f/" + b"00" * 16 + b"/m\n",
        b"i/",
        b"i/00",
        b"i/65536",
        b"i/100000",
        b"x/0",
    ],
)
def test_parse_object_id_rejects(oid: bytes) -> None:
    with pytest.raises(UsageError):
        parse_object_id(oid)


def test_object_id_bounds() -> None:
    for bad in (-1, 256, True):
        with pytest.raises(UsageError):
            block_object_id(FILE_ID, bad, 0)
        with pytest.raises(UsageError):
            share_prefix(FILE_ID, bad)
    for bad in (-1, 2**32, True):
        with pytest.raises(UsageError):
            block_object_id(FILE_ID, 0, bad)
    for bad in (0, 2**32):
        with pytest.raises(UsageError):
            timestamp_object_id(FILE_ID, bad)
    for bad in (-1, 65536):
        with pytest.raises(UsageError):
            index_object_id(bad)
    with pytest.raises(UsageError):
        file_prefix(b"short")


def test_reader() -> None:
    r = Reader(b"\x01\x02\x03", "thing")
    assert r.uint(2) == 0x0102
    with pytest.raises(UsageError, match="malformed thing: 1 trailing bytes"):
        r.end()
    with pytest.raises(UsageError, match="malformed thing: truncated"):
        r.take(2)
    assert r.take(1) == b"\x03"
    r.end()
