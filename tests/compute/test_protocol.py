"""Frames between pool and worker: round trips both ways, and the bounds a reader keeps."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from nuclux.node.compute import protocol

pytestmark = pytest.mark.timeout(30)


def test_blocking_round_trip() -> None:
    r, w = os.pipe()
    try:
        blobs = [b"", b"x" * 200_000, bytes(range(256))]  # more than a pipe holds

        def write() -> None:
            protocol.send(w, {"event": "done", "n": 1}, blobs)
            protocol.send(w, {"event": "ready"})

        writer = threading.Thread(target=write)
        writer.start()
        header, got = protocol.receive(r, max_body=1 << 20) or ({}, [])
        writer.join()
        assert header == {"event": "done", "n": 1, "sizes": [0, 200_000, 256]}
        assert got == blobs
        assert protocol.receive(r, max_body=0) == ({"event": "ready", "sizes": []}, [])
        os.close(w)
        w = -1
        assert protocol.receive(r, max_body=0) is None  # end of stream
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


async def test_async_reader_and_bounds() -> None:
    def reader(data: bytes) -> asyncio.StreamReader:
        stream = asyncio.StreamReader()
        stream.feed_data(data)
        stream.feed_eof()
        return stream

    frame = b"".join(protocol.encode({"event": "x"}, [b"abc"]))
    assert await protocol.read_frame(reader(frame), 3) == ({"event": "x", "sizes": [3]}, [b"abc"])
    with pytest.raises(protocol.ProtocolError, match="body of 3 bytes exceeds 2"):
        await protocol.read_frame(reader(frame), 2)
    with pytest.raises(protocol.ProtocolError, match="header of"):
        await protocol.read_frame(reader((protocol.MAX_HEADER + 1).to_bytes(4, "big")), 0)
    for bad in (b"not json", b"[1]", b'{"sizes": [-1]}', b'{"sizes": [true]}', b"{}"):
        with pytest.raises(protocol.ProtocolError):
            await protocol.read_frame(reader(len(bad).to_bytes(4, "big") + bad), 10)
    with pytest.raises(asyncio.IncompleteReadError):
        await protocol.read_frame(reader(frame[:-1]), 3)
    with pytest.raises(protocol.ProtocolError, match="exceeds"):
        protocol.encode({"big": "x" * protocol.MAX_HEADER})
