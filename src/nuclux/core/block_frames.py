"""Block streams: share blocks framed on one upgraded connection (``spec/node-api.md``,
"Block streams").

A consumer that moves many share blocks to or from one node opens a block stream on a lease
(an HTTP/1.1 upgrade to ``nuclux-blocks/1``, authenticated like any request) and then sends
fixed-size request headers, each a PUT followed by the block's bytes or a GET. The node answers
every request in the order it was sent: a fixed-size answer header, then its payload (the
stored object's JSON, an error's JSON, or the bytes read).

Request header, 112 bytes, integers big-endian::

    op u8 | id length u8 | object id (64 bytes, zero-padded) | offset u64 | length u32 |
    root (32 bytes) | 2 zero bytes

``op`` 1 (PUT): ``length`` bytes of body follow, ``root`` is the block's Merkle root, ``offset``
is 0. ``op`` 2 (GET): ``length`` bytes from ``offset`` (0: to the end), ``root`` is zero.

Answer header, 40 bytes::

    status u8 | 3 zero bytes | payload length u32 | digest (32 bytes)

``status`` 0: done (a GET's ``digest`` is the object's content digest, its Merkle root for a
block; a PUT's payload is the stored object's JSON); 1: refused (the payload is the error's
JSON, ``{"error": {"code", "message"}}``, as an HTTP error body; the stream goes on).

This module is pure: it packs and checks headers, nothing else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from nuclux.errors import UsageError

PROTOCOL: Final = "nuclux-blocks/1"
PUT: Final = 1
GET: Final = 2
OK: Final = 0
REFUSED: Final = 1
REQUEST_SIZE: Final = 112
ANSWER_SIZE: Final = 40
MAX_ID: Final = 64
MAX_LENGTH: Final = (1 << 32) - 1
MAX_ANSWER_PAYLOAD: Final = 1 << 20  # the JSON of an answer that is not a GET's bytes

_REQUEST = struct.Struct(">BB64sQI32s2x")
_ANSWER = struct.Struct(">B3xI32s")
_ZERO32 = bytes(32)
assert _REQUEST.size == REQUEST_SIZE
assert _ANSWER.size == ANSWER_SIZE


class FrameError(UsageError):
    """A header that breaks the framing: the stream cannot go on after it."""


@dataclass(frozen=True, slots=True)
class Request:
    op: int
    object_id: bytes
    offset: int
    length: int
    root: bytes


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    length: int
    digest: bytes


def put_header(object_id: bytes, size: int, root: bytes) -> bytes:
    _check_id(object_id)
    if not 0 < size <= MAX_LENGTH:
        raise UsageError(f"a block is 1 to {MAX_LENGTH} bytes, not {size}")
    if len(root) != 32:
        raise UsageError("a block's Merkle root is 32 bytes")
    return _REQUEST.pack(PUT, len(object_id), object_id, 0, size, root)


def get_header(object_id: bytes, offset: int = 0, length: int = 0) -> bytes:
    _check_id(object_id)
    if not 0 <= offset < 1 << 64 or not 0 <= length <= MAX_LENGTH:
        raise UsageError(f"bad range: offset {offset}, length {length}")
    return _REQUEST.pack(GET, len(object_id), object_id, offset, length, _ZERO32)


def parse_request(header: bytes | bytearray | memoryview) -> Request:
    """The request a header asks for; ``FrameError`` if it is malformed."""
    op, n, padded, offset, length, root = _REQUEST.unpack(header)
    if op not in (PUT, GET):
        raise FrameError(f"unknown block stream op {op}")
    if not 1 <= n <= MAX_ID or any(padded[n:]):
        raise FrameError(f"bad object id length {n}")
    if bytes(header[-2:]) != b"\0\0":
        raise FrameError("the last two bytes of a request header are zero")
    if op == PUT and (length == 0 or offset != 0):
        raise FrameError("a PUT carries 1 or more bytes at offset 0")
    if op == GET and root != _ZERO32:
        raise FrameError("a GET's root field is zero")
    return Request(op, padded[:n], offset, length, root)


def answer_header(status: int, length: int, digest: bytes = _ZERO32) -> bytes:
    return _ANSWER.pack(status, length, digest)


def parse_answer(header: bytes | bytearray | memoryview) -> Answer:
    status, length, digest = _ANSWER.unpack(header)
    if status not in (OK, REFUSED) or bytes(header[1:4]) != b"\0\0\0":
        raise FrameError(f"bad block stream answer (status {status})")
    return Answer(status, length, digest)


def _check_id(object_id: bytes) -> None:
    if not 1 <= len(object_id) <= MAX_ID:
        raise UsageError("object ids are 1-64 bytes")
