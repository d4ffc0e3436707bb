"""Reading a node's response bodies: checked against the digest the node reports, and read
straight into a caller's buffer.

``BodyCheck`` hashes a whole object's body as its chunks arrive and compares the result with
the digest the node reported: ``X-Nuclux-Content-Root`` (a share block stored by its Merkle
root) or ``X-Nuclux-Content-SHA256``. Small chunks are hashed inline; larger ones in order in
one thread (hashing releases the GIL), overlapping the next chunk's arrival.

``read_into`` copies a body into a caller's buffer chunk by chunk as the HTTP parser hands
them over (``StreamReader.readchunk``: no joining of buffered chunks), so a downloaded block
is copied once after TLS, into the place where it is used.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any

import aiohttp

from nuclux.core.merkle import MerkleBuilder
from nuclux.errors import IntegrityError, UsageError
from nuclux.net.signing import CONTENT_ROOT_HEADER, CONTENT_SHA256_HEADER

THREAD_HASH_BYTES = 64 << 10  # smaller chunks are hashed inline (a hand-off costs more)


class BufferTooSmall(UsageError):
    """An object (or range) is longer than the buffer given to read it into."""


class _RootHasher:
    """A ``hashlib``-like face on ``MerkleBuilder``: a block's Merkle root, in hex."""

    def __init__(self) -> None:
        self._tree = MerkleBuilder()

    def update(self, data: bytes) -> None:
        self._tree.update(data)

    def hexdigest(self) -> str:
        return self._tree.root().hex()


class BodyCheck:
    """The digest a whole object's body must have, computed as its chunks arrive."""

    def __init__(self, headers: Mapping[str, str], pool: Callable[[], Executor]) -> None:
        self._expected = headers.get(CONTENT_SHA256_HEADER, "")
        self._hash: Any = hashlib.sha256()
        if CONTENT_ROOT_HEADER in headers:  # a block stored by its root
            self._expected, self._hash = headers[CONTENT_ROOT_HEADER], _RootHasher()
        self._pool = pool
        self._pending: asyncio.Future[None] | None = None  # the latest chunk handed off

    def update(self, chunk: bytes) -> None:
        """Hash the next chunk (an immutable ``bytes``: it may be hashed in a thread)."""
        if len(chunk) < THREAD_HASH_BYTES and (self._pending is None or self._pending.done()):
            self._hash.update(chunk)  # small, and nothing queued before it: inline is cheaper
        else:  # in order (one thread), overlapping the next chunk's arrival
            loop = asyncio.get_running_loop()
            self._pending = loop.run_in_executor(self._pool(), self._hash.update, chunk)

    async def verify(self, what: str) -> None:
        """``IntegrityError`` naming ``what`` if the body hashed differs from the report."""
        if self._pending is not None:
            await self._pending
        if self._hash.hexdigest() != self._expected.lower():
            raise IntegrityError(f"{what} does not match the hash the node reported")


async def read_into(
    content: aiohttp.StreamReader, view: memoryview, check: BodyCheck | None, what: str
) -> int:
    """Copy a body into ``view`` (a writable byte view) and return its length;
    ``BufferTooSmall`` (nothing written beyond the view) if it does not fit."""
    pos = 0
    while True:
        chunk, end_of_http_chunk = await content.readchunk()
        if not chunk:
            if end_of_http_chunk:  # an empty chunk of a chunked body, not the end
                continue
            return pos
        end = pos + len(chunk)
        if end > len(view):
            raise BufferTooSmall(f"the buffer of {len(view)} bytes is too small for {what}")
        view[pos:end] = chunk
        if check is not None:
            check.update(chunk)
        pos = end
