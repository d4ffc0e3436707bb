"""Block stream headers (``nuclux.core.block_frames``): what is packed reads back, and every
malformed header is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nuclux.core import block_frames as bf
from nuclux.errors import UsageError

ids = st.binary(min_size=1, max_size=64)


@given(ids, st.integers(1, bf.MAX_LENGTH), st.binary(min_size=32, max_size=32))
def test_put_headers_read_back(oid: bytes, size: int, root: bytes) -> None:
    header = bf.put_header(oid, size, root)
    assert len(header) == bf.REQUEST_SIZE
    assert bf.parse_request(header) == bf.Request(bf.PUT, oid, 0, size, root)


@given(ids, st.integers(0, (1 << 64) - 1), st.integers(0, bf.MAX_LENGTH))
def test_get_headers_read_back(oid: bytes, offset: int, length: int) -> None:
    assert bf.parse_request(bf.get_header(oid, offset, length)) == bf.Request(
        bf.GET, oid, offset, length, bytes(32)
    )


@given(
    st.sampled_from([bf.OK, bf.REFUSED]),
    st.integers(0, bf.MAX_LENGTH),
    st.binary(min_size=32, max_size=32),
)
def test_answers_read_back(status: int, length: int, digest: bytes) -> None:
    header = bf.answer_header(status, length, digest)
    assert len(header) == bf.ANSWER_SIZE
    assert bf.parse_answer(header) == bf.Answer(status, length, digest)


def _with(header: bytes, at: int, value: int) -> bytes:
    b = bytearray(header)
    b[at] = value
    return bytes(b)


def test_malformed_headers_are_refused() -> None:
    put = bf.put_header(b"\x01", 5, bytes(32))
    get = bf.get_header(b"\x01")
    bad = {
        "unknown block stream op": _with(put, 0, 3),
        "bad object id length": _with(put, 1, 0),
        "bad object id length ": _with(put, 1, 65),
        "bad object id length  ": _with(put, 10, 1),  # a byte past the id's length
        "last two bytes": _with(put, 111, 1),
        "1 or more bytes": put[:74] + bytes(4) + put[78:],  # a PUT of length 0
        "root field is zero": _with(get, 80, 1),
    }
    for why, header in bad.items():
        with pytest.raises(bf.FrameError, match=why.strip()):
            bf.parse_request(header)
    with pytest.raises(bf.FrameError):
        bf.parse_answer(_with(bf.answer_header(bf.OK, 1), 0, 2))
    with pytest.raises(bf.FrameError):
        bf.parse_answer(_with(bf.answer_header(bf.OK, 1), 2, 1))
    with pytest.raises(UsageError):
        bf.put_header(b"", 1, bytes(32))
    with pytest.raises(UsageError):
        bf.put_header(b"x", 0, bytes(32))
    with pytest.raises(UsageError):
        bf.get_header(b"x" * 65)
