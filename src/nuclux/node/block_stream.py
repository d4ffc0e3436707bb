"""The node's end of a block stream (``nuclux.core.block_frames``; ``spec/node-api.md``,
"Block streams").

A consumer's ``POST /v1/leases/{lease}/stream`` with ``Upgrade: nuclux-blocks/1`` is checked
like any write request (signature, freshness, nonce, the lease and its consumer); the node
answers ``101 Switching Protocols`` and hands the connection to a ``BlockStream``, which
takes request headers and PUT bodies straight into its buffers (``asyncio.BufferedProtocol``:
the TLS layer decrypts into them, no HTTP parser and no per-chunk objects), stores or reads
each block with the shard store, and answers in request order.

Bounds: at most ``MAX_PENDING`` requests are being handled or answered at once and at most
``PUT_BODIES`` PUT bodies are held (two receive buffers, reused); past either, the node stops
reading the socket until an answer goes out. A block is at most ``MAX_STREAM_BLOCK`` bytes
(larger objects use ``PUT`` over HTTP). A request refused (a quota, a frozen share, an unknown
object) gets its error as an answer and the stream goes on; a malformed header gets a
``bad_frame`` answer and the stream is closed after the answers before it.

Every request re-checks that the lease is still served (its state in the node's chain view), so
a stream opened on a lease that then ends is refused from that point on.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from typing import Any, Protocol

from aiohttp import web

from nuclux.core.block_frames import (
    GET,
    OK,
    PROTOCOL,
    REFUSED,
    REQUEST_SIZE,
    FrameError,
    Request,
    answer_header,
    parse_request,
)
from nuclux.core.merkle import Buffer
from nuclux.core.reference import parse_block_id
from nuclux.errors import NucluxError, StoreError, UsageError
from nuclux.net.block_stream import feed
from nuclux.node.store import ShardStore
from nuclux.node.store_types import MAX_READ_RANGE, ObjectInfo

log = logging.getLogger("nuclux.node.stream")

MAX_PENDING = 6  # requests being handled or answered, per stream
PUT_BODIES = 2  # PUT bodies held at once, per stream
MAX_STREAM_BLOCK = MAX_READ_RANGE  # 16 MiB: one block, in or out, per request

Answered = tuple[bytes, Buffer]  # answer header, payload


class StreamHost(Protocol):
    """What a stream needs of the node (``NodeService``)."""

    store: ShardStore

    def clock(self) -> int: ...

    async def stream_lease(self, lease_id: int) -> None:
        """Raise unless the lease is still served to its consumer (and its quota is set)."""

    def refusal(self, err: NucluxError) -> dict[str, Any]:
        """The JSON body of an error, as the HTTP API answers it."""

    def track_stream(self, stream: BlockStream) -> None:
        """Remember an open stream (to end it on shutdown)."""


class BlockStream(asyncio.BufferedProtocol):
    def __init__(
        self, host: StreamHost, lease_id: int, http: asyncio.BaseProtocol | None = None
    ) -> None:
        self._host, self._lease_id, self._http = host, lease_id, http
        self._transport: asyncio.Transport | None = None
        self._header = bytearray(REQUEST_SIZE)
        self._got = 0
        self._put: Request | None = None  # a PUT whose body is arriving
        self._body: bytearray | None = None
        self._free: list[bytearray] = []
        self._bodies = 0
        self._answers: deque[asyncio.Future[Answered]] = deque()
        self._more = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()
        self._paused = self._ending = False
        self._sender: asyncio.Task[None] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # ------------------------------------------------------------------ protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        self._sender = asyncio.ensure_future(self._send_answers())

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._put is None:
            return memoryview(self._header)[self._got :]
        assert self._body is not None
        return memoryview(self._body)[self._got : self._put.length]

    def buffer_updated(self, nbytes: int) -> None:
        self._got += nbytes
        if self._put is None:
            if self._got == REQUEST_SIZE:
                self._got = 0
                self._request()
        elif self._got == self._put.length:
            req, body = self._put, self._body
            assert body is not None
            self._put, self._body, self._got = None, None, 0
            self._start(self._store(req, body))
        self._limit()

    def feed(self, data: bytes) -> None:
        """Bytes that arrived before the protocol took over (sent right behind the upgrade)."""
        feed(self, data, lambda: self._ending)

    def eof_received(self) -> bool:
        return False  # close once the answers are written (the transport closes the socket)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._writable.set()
        if self._sender is not None:
            self._sender.cancel()
        if not self.closed.done():
            self.closed.set_result(None)
        if self._http is not None:  # let the HTTP server forget the connection
            self._http.connection_lost(exc)
            self._http = None

    def end(self) -> None:
        """Take no more requests; close once the ones taken are answered (node shutdown)."""
        self._ending = True
        self._limit()
        self._more.set()

    # ------------------------------------------------------------------ requests

    def _request(self) -> None:
        try:
            req = parse_request(self._header)
            if req.length > MAX_STREAM_BLOCK:
                raise FrameError(
                    f"a block stream carries at most {MAX_STREAM_BLOCK} bytes a request; "
                    "use the HTTP API for larger objects"
                )
        except FrameError as err:
            self._ending = True
            self._start(self._refuse(err, "bad_frame"))
            return
        if req.op == GET:
            self._start(self._read(req))
            return
        self._put, self._body, self._bodies = req, self._buffer(req.length), self._bodies + 1

    def _start(self, work: Any) -> None:
        self._answers.append(asyncio.ensure_future(work))
        self._more.set()

    def _limit(self) -> None:
        """Pause reading while the stream holds as much as it may; resume when it does not."""
        if self._transport is None:
            return
        full = len(self._answers) >= MAX_PENDING or self._bodies >= PUT_BODIES
        if (full or self._ending) and not self._paused and self._put is None:
            self._paused = True
            self._transport.pause_reading()
        elif self._paused and not full and not self._ending:
            self._paused = False
            self._transport.resume_reading()

    def _buffer(self, size: int) -> bytearray:
        for i, buf in enumerate(self._free):
            if len(buf) >= size:
                return self._free.pop(i)
        return bytearray(size)

    def _release(self, buf: bytearray) -> None:
        self._bodies -= 1
        if len(self._free) < PUT_BODIES:
            self._free.append(buf)
        self._limit()

    async def _store(self, req: Request, body: bytearray) -> Answered:
        store = self._host.store
        try:
            await self._host.stream_lease(self._lease_id)
            if parse_block_id(req.object_id) is None:
                raise UsageError("a block stream carries share blocks only")
            await store.check_writable(self._lease_id, req.object_id)
            async with store.writer(
                self._lease_id,
                req.object_id,
                size=req.length,
                merkle_root=req.root,
                created_at=self._host.clock(),
            ) as w:
                await w.write(memoryview(body)[: req.length], borrowed=True)
                info = await w.commit()
            payload = json.dumps(stored_json(info)).encode()
            return answer_header(OK, len(payload)), payload
        except NucluxError as err:
            return await self._refuse(err)
        except Exception as err:  # a fault of this node: answer it, keep the stream
            log.exception("block stream PUT of lease %s failed", self._lease_id)
            return await self._refuse(StoreError(f"internal error: {err!r}"))
        finally:
            self._release(body)

    async def _read(self, req: Request) -> Answered:
        try:
            await self._host.stream_lease(self._lease_id)
            async with self._host.store.open_read(self._lease_id, req.object_id) as obj:
                data = await obj.read(req.offset, req.length or None)
                digest = obj.info.sha256
            return answer_header(OK, len(data), digest), data
        except NucluxError as err:
            return await self._refuse(err)
        except Exception as err:
            log.exception("block stream GET of lease %s failed", self._lease_id)
            return await self._refuse(StoreError(f"internal error: {err!r}"))

    async def _refuse(self, err: NucluxError, code: str | None = None) -> Answered:
        body = self._host.refusal(err)
        if code is not None:
            body["error"]["code"] = code
        payload = json.dumps(body).encode()
        return answer_header(REFUSED, len(payload)), payload

    # ------------------------------------------------------------------ answers

    async def _send_answers(self) -> None:
        try:
            while True:
                while not self._answers:
                    if self._ending and self._put is None:
                        self._close()
                        return
                    self._more.clear()
                    await self._more.wait()
                header, payload = await self._answers[0]
                self._answers.popleft()
                await self._writable.wait()
                transport = self._transport
                if transport is None:
                    return
                transport.write(header)
                if payload:
                    transport.write(payload)
                self._limit()
        except Exception:  # a bug: never leave the consumer waiting on a silent stream
            log.exception("block stream of lease %s failed", self._lease_id)
            self._close()

    def _close(self) -> None:
        if self._transport is not None:
            self._transport.close()


def stored_json(info: ObjectInfo) -> dict[str, Any]:
    """An object's digest and size as the API reports them: ``root`` for a block stored under
    its Merkle root, ``sha256`` for everything else."""
    return {"root" if info.root_digest else "sha256": info.sha256.hex(), "size": info.size}


async def serve(host: StreamHost, request: web.Request, lease_id: int) -> web.StreamResponse:
    """Answer an authorised upgrade request with 101 and serve the stream until it closes."""
    transport, http = request.transport, request.protocol
    if transport is None or transport.is_closing():
        raise StoreError("the connection closed before the stream opened")
    resp = web.StreamResponse(status=101, headers={"Upgrade": PROTOCOL, "Connection": "Upgrade"})
    await resp.prepare(request)
    stream = BlockStream(host, lease_id, http)
    tail = bytes(getattr(http, "_message_tail", b""))  # requests sent right behind the upgrade
    transport.set_protocol(stream)
    stream.connection_made(transport)
    transport.resume_reading()
    if tail:
        stream.feed(tail)
    host.track_stream(stream)
    await stream.closed
    return resp
