"""Frames between the pool and a worker process: a JSON header and raw byte blobs.

Theory of operation
-------------------
One frame is ``u32 header length || JSON header || blobs``; the header's ``sizes`` lists
the blobs' lengths, in order. JSON keeps the header readable and safe to decode (no pickle
crosses the process boundary: the worker runs untrusted code, so the node does not let it
hand back objects to unpickle); blobs carry module, input, stdout and output bytes without
encoding them. The reader bounds the header (``MAX_HEADER``) and the blobs together (its
``max_body``), so a broken worker cannot make the node allocate without limit.

Pool to worker: ``{"op": "run", ...}`` with blobs ``[module?] + inputs``.
Worker to pool: ``ready``; then per job ``need_module`` or ``rejected``, or ``started``
followed by ``done`` (blobs ``stdout, stderr, *outputs``) or ``failed`` (an internal error).

This module runs on both sides and imports only the standard library.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # the worker never imports asyncio
    import asyncio

MAX_HEADER: Final = 1 << 20
Header = dict[str, Any]


class ProtocolError(Exception):
    """A frame broke the format or its bounds."""


def encode(header: Header, blobs: list[bytes] | tuple[bytes, ...] = ()) -> list[bytes]:
    """The pieces of one frame, ready for ``writev`` or a stream writer."""
    raw = json.dumps({**header, "sizes": [len(b) for b in blobs]}).encode()
    if len(raw) > MAX_HEADER:
        raise ProtocolError(f"frame header of {len(raw)} bytes exceeds {MAX_HEADER}")
    return [len(raw).to_bytes(4, "big") + raw, *blobs]


def _parse(raw: bytes, max_body: int) -> tuple[Header, list[int]]:
    try:
        header = json.loads(raw)
    except ValueError:
        raise ProtocolError("frame header is not JSON") from None
    sizes = header.get("sizes") if isinstance(header, dict) else None
    if not isinstance(sizes, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in sizes
    ):
        raise ProtocolError("frame header lacks a valid 'sizes' list")
    if sum(sizes) > max_body:
        raise ProtocolError(f"frame body of {sum(sizes)} bytes exceeds {max_body}")
    return header, sizes


def _header_length(prefix: bytes) -> int:
    n = int.from_bytes(prefix, "big")
    if n > MAX_HEADER:
        raise ProtocolError(f"frame header of {n} bytes exceeds {MAX_HEADER}")
    return n


async def read_frame(reader: asyncio.StreamReader, max_body: int) -> tuple[Header, list[bytes]]:
    """One frame from ``reader``; ``asyncio.IncompleteReadError`` at end of stream."""
    raw = await reader.readexactly(_header_length(await reader.readexactly(4)))
    header, sizes = _parse(raw, max_body)
    return header, [await reader.readexactly(n) for n in sizes]


async def write_frame(
    writer: asyncio.StreamWriter, header: Header, blobs: list[bytes] | tuple[bytes, ...] = ()
) -> None:
    writer.writelines(encode(header, blobs))
    await writer.drain()


# -- blocking side (the worker) ----------------------------------------------------------------


def _read_exactly(fd: int, n: int) -> bytearray | None:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = os.readv(fd, [view[got:]])
        if k == 0:
            return None
        got += k
    return buf


def receive(fd: int, max_body: int) -> tuple[Header, list[bytearray]] | None:
    """One frame from ``fd``, or None at end of stream (the pool went away). Blobs are
    bytearrays, read in place: an input is never held twice."""
    prefix = _read_exactly(fd, 4)
    if prefix is None:
        return None
    raw = _read_exactly(fd, _header_length(bytes(prefix)))
    if raw is None:
        return None
    header, sizes = _parse(bytes(raw), max_body)
    blobs = []
    for n in sizes:
        blob = _read_exactly(fd, n)
        if blob is None:
            return None
        blobs.append(blob)
    return header, blobs


def send(fd: int, header: Header, blobs: list[bytes] | tuple[bytes, ...] = ()) -> None:
    """Write one frame to ``fd`` (all of it, across short writes)."""
    views = [memoryview(p) for p in encode(header, blobs) if p]
    while views:
        done = os.writev(fd, views[:1024])
        while done and views:
            if done >= len(views[0]):
                done -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][done:]
                done = 0
