"""Object batches: the frozen body format, and every malformation refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nuclux.core.batch import (
    MAX_BATCH_BYTES,
    MAX_COUNT,
    MAX_OBJECT_BYTES,
    chunk,
    decode_batch,
    encode_batch,
    record_bytes,
)
from nuclux.errors import UsageError

ids = st.binary(min_size=1, max_size=64)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(ids, st.binary(max_size=2000), min_size=1, max_size=20))
def test_round_trip(objects: dict[bytes, bytes]) -> None:
    items = list(objects.items())
    decoded = decode_batch(encode_batch(items))
    assert [(oid, bytes(data)) for oid, data in decoded] == items


def test_golden_vector() -> None:
    body = encode_batch([(b"m", b"hello"), (b"\x00\xff", b"")])
    assert body.hex() == "4e5842310002016d0000000568656c6c6f0200ff00000000"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "no NXB1 header"),
        (b"NXB2\x00\x01", "no NXB1 header"),
        (b"NXB1\x00\x00", "1 to 1024 objects"),
        (b"NXB1" + (MAX_COUNT + 1).to_bytes(2, "big"), "1 to 1024 objects"),
        (b"NXB1\x00\x01", "ends before its last record"),
        (b"NXB1\x00\x01\x00\x00\x00\x00\x00", "empty id"),
        (b"NXB1\x00\x01\x02a", "cut short"),
        (b"NXB1\x00\x01\x01a\x00\x00\x00\x05abc", "cut short in the batch"),
        (b"NXB1\x00\x01\x01a\x00\x00\x00\x01bEXTRA", "follow the last record"),
        (b"NXB1\x00\x02\x01a\x00\x00\x00\x00\x01a\x00\x00\x00\x00", "appears twice"),
        (b"NXB1\x00\x01\x01a" + (MAX_OBJECT_BYTES + 1).to_bytes(4, "big"), "at most 65536"),
        (b"NXB1" + bytes(MAX_BATCH_BYTES), "at most 4194304 bytes"),
    ],
)
def test_malformed_bodies_are_refused(body: bytes, why: str) -> None:
    with pytest.raises(UsageError, match=why):
        decode_batch(body)


def test_encoder_refuses_what_the_decoder_would() -> None:
    with pytest.raises(UsageError, match="1 to 1024"):
        encode_batch([])
    with pytest.raises(UsageError, match="twice"):
        encode_batch([(b"a", b"1"), (b"a", b"2")])
    with pytest.raises(UsageError, match="ids are 1 to 64"):
        encode_batch([(b"", b"1")])
    with pytest.raises(UsageError, match="at most 65536"):
        encode_batch([(b"a", bytes(MAX_OBJECT_BYTES + 1))])
    big = [(i.to_bytes(4, "big"), bytes(MAX_OBJECT_BYTES)) for i in range(70)]
    with pytest.raises(UsageError, match="at most 4194304"):
        encode_batch(big)


def test_chunk_cuts_into_the_fewest_batches_in_order() -> None:
    big = [(b"o/%d" % i, bytes(MAX_OBJECT_BYTES)) for i in range(130)]
    batches = chunk(big)
    assert [item for batch in batches for item in batch] == big
    for batch in batches:
        assert len(encode_batch(batch)) <= MAX_BATCH_BYTES  # each one a valid batch
    per = (MAX_BATCH_BYTES - 6) // record_bytes(b"o/100", MAX_OBJECT_BYTES)
    assert len(batches) == -(-130 // per)
    tiny = [(b"t/%d" % i, b"x") for i in range(MAX_COUNT + 1)]
    assert [len(b) for b in chunk(tiny)] == [MAX_COUNT, 1]
    assert chunk([]) == []
