"""The consumer's end of a block stream (``nuclux.core.block_frames``; ``spec/node-api.md``,
"Block streams").

``BlockStream.open`` connects to the node with the pinned TLS context, sends the signed
upgrade request and waits for ``101``; any other answer raises the node's error
(``net.client.node_error``). Afterwards ``put`` and ``get_into`` send requests at once and
wait for their answers, which arrive in request order: a GET's bytes go straight from the TLS
layer into the caller's buffer (``asyncio.BufferedProtocol``), a PUT's body is written from the
caller's memory.

A caller that stops waiting (cancelled, as a download does when it hedges) leaves its request
on the stream: the answer is still read, into a scratch buffer, and the caller's buffer is not
touched again. A request that times out closes the stream (the node is hung or far behind), so
the requests behind it fail at once with ``ConnectionResetError`` instead of waiting their
turn. A lost connection fails every request waiting on it the same way.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from yarl import URL

from nuclux.core.block_frames import (
    ANSWER_SIZE,
    GET,
    MAX_ANSWER_PAYLOAD,
    OK,
    PROTOCOL,
    PUT,
    get_header,
    parse_answer,
    put_header,
)
from nuclux.core.merkle import Buffer
from nuclux.errors import IntegrityError, NucluxError
from nuclux.net.answers import StoredObject, checked_stored
from nuclux.net.bodies import BufferTooSmall
from nuclux.net.node_errors import node_error

MAX_HEAD = 64 << 10  # the upgrade answer's status line and headers
_SCRATCH = 256 << 10
_PIECE = 256 << 10  # a PUT body is written in pieces of this size,
_HIGH_WATER = 1 << 20  # while the stream's encrypted backlog is below this


class StreamsNotOffered(NucluxError):
    """The node has no block streams (an older node): use the HTTP API."""


@dataclass(slots=True)
class _Waiting:
    op: int
    done: asyncio.Future[Any]
    view: memoryview | None = None  # where a GET's bytes go; None once abandoned
    status: int = OK
    digest: bytes = b""
    too_long: int = 0  # a GET answer's length past the buffer


class BlockStream(asyncio.BufferedProtocol):
    """One upgraded connection to a node, bound to one lease."""

    def __init__(self, where: str) -> None:
        self.where = where
        loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._opened: asyncio.Future[None] = loop.create_future()
        self._head = bytearray()  # the upgrade answer, until it is whole
        self._head_body = -1  # a refusal's body length, once its headers are in
        self._status = 0
        self._answer = bytearray(ANSWER_SIZE)
        self._upgraded = False
        self._payload: bytearray | None = None  # a JSON payload being read
        self._left = 0  # payload bytes still to read
        self._got = 0
        self._scratch = bytearray(_SCRATCH)
        self._waiting: deque[_Waiting] = deque()
        self._writable = asyncio.Event()
        self._writable.set()
        self._sending = asyncio.Lock()
        self._error: Exception | None = None

    @classmethod
    async def open(
        cls,
        base: URL,
        lease_id: int,
        ssl: Any,
        headers: Callable[[URL], dict[str, str]],
        timeout: float,
    ) -> BlockStream:
        """Connect, upgrade, and return the open stream; ``headers(url)`` signs the request."""
        url = base.with_path(f"/v1/leases/{lease_id}/stream")
        host, port = base.host or "", base.port or 443
        loop = asyncio.get_running_loop()
        stream = cls(f"{host}:{port}")
        async with asyncio.timeout(timeout):
            transport, _ = await loop.create_connection(lambda: stream, host, port, ssl=ssl)
            try:
                lines = [
                    f"POST {url.raw_path} HTTP/1.1",
                    f"Host: {host}:{port}",
                    "Connection: Upgrade",
                    f"Upgrade: {PROTOCOL}",
                    "Content-Length: 0",
                ] + [f"{k}: {v}" for k, v in headers(url).items()]
                transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
                await stream._opened
            except BaseException:
                transport.abort()
                raise
        return stream

    @property
    def is_open(self) -> bool:
        return self._transport is not None and self._error is None

    def close(self) -> None:
        """Drop the connection at once (its socket closed now, not after a TLS goodbye the
        event loop may not live to see); requests still waiting fail."""
        self._fail(ConnectionResetError(f"the block stream to {self.where} was closed"))

    # ------------------------------------------------------------------ requests

    async def put(self, object_id: bytes, data: Buffer, root: bytes) -> StoredObject:
        """Store a share block under its Merkle root; ``data`` stays unchanged until this
        returns or raises."""
        view = memoryview(data).cast("B")
        header = put_header(object_id, len(view), root)
        body: dict[str, Any] = await self._ask(PUT, header, view, None, None)
        return checked_stored(object_id, body, root, len(view))

    async def get_into(
        self, object_id: bytes, buffer: memoryview, timeout: float | None = None
    ) -> tuple[int, bytes]:
        """Read a whole object into ``buffer``: (bytes read, the digest the node reports)."""
        result: tuple[int, bytes] = await self._ask(
            GET, get_header(object_id), None, buffer, timeout
        )
        return result

    async def _ask(
        self,
        op: int,
        header: bytes,
        body: memoryview | None,
        into: memoryview | None,
        timeout: float | None,
    ) -> Any:
        async with self._sending:  # one request's header and body at a time
            waiting = _Waiting(op, asyncio.get_running_loop().create_future(), into)
            self._write(header)
            self._waiting.append(waiting)
            # a body goes out in pieces as the socket takes them, so at most about one piece
            # per stream waits encrypted in memory (a 1 GiB upload's peak RSS)
            rest = memoryview(b"") if body is None else body
            while rest:
                try:
                    await self._writable.wait()
                except asyncio.CancelledError:  # half a body sent: the framing is lost
                    self._fail(ConnectionResetError(f"a block PUT to {self.where} was cancelled"))
                    raise
                self._write(rest[:_PIECE])
                rest = rest[_PIECE:]
        try:
            if timeout is None:
                return await asyncio.shield(waiting.done)
            async with asyncio.timeout(timeout):
                return await asyncio.shield(waiting.done)
        except TimeoutError:
            self._fail(ConnectionResetError(f"the block stream to {self.where} timed out"))
            raise
        except asyncio.CancelledError:
            waiting.view = None  # the answer still comes; it goes to the scratch buffer
            raise

    def _write(self, data: Buffer) -> None:
        transport = self._transport
        if transport is None or self._error is not None:
            raise self._error or ConnectionResetError(f"the block stream to {self.where} closed")
        transport.write(data)

    # ------------------------------------------------------------------ protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.set_write_buffer_limits(high=_HIGH_WATER)  # type: ignore[attr-defined]
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._fail(ConnectionResetError(f"the block stream to {self.where} closed ({exc})"))
        self._writable.set()

    def eof_received(self) -> bool:
        return False

    def get_buffer(self, sizehint: int) -> memoryview:
        if not self._upgraded:
            return memoryview(self._scratch)
        if self._left:
            if self._payload is not None:
                return memoryview(self._payload)[self._got :]
            view = self._waiting[0].view if self._waiting else None
            if view is None:  # abandoned by its caller: the bytes are read and dropped
                return memoryview(self._scratch)[: min(self._left, _SCRATCH)]
            return view[self._got : self._got + self._left]
        return memoryview(self._answer)[self._got :]

    def buffer_updated(self, nbytes: int) -> None:
        try:
            if not self._upgraded:
                self._upgrade_answer(bytes(self._scratch[:nbytes]))
            elif self._left:
                self._got += nbytes
                self._left -= nbytes
                if not self._left:
                    self._answered()
            else:
                self._got += nbytes
                if self._got == ANSWER_SIZE:
                    self._answer_header()
        except Exception as err:  # a malformed answer: the stream cannot go on
            self._fail(err)

    # ------------------------------------------------------------------ internals

    def _upgrade_answer(self, data: bytes) -> None:
        if self._error is not None:
            return
        self._head += data
        if self._head_body < 0:
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                if len(self._head) > MAX_HEAD:
                    raise IntegrityError(f"{self.where} sent an overlong answer to the upgrade")
                return
            lines = bytes(self._head[:end]).decode("latin-1").split("\r\n")
            rest = bytes(self._head[end + 4 :])
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[1].isdigit():
                raise IntegrityError(f"{self.where} answered the upgrade with {lines[0]!r}")
            self._status = int(parts[1])
            fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
            if self._status == 101:
                if fields.get("upgrade", "").lower() != PROTOCOL:
                    raise IntegrityError(f"{self.where} upgraded to {fields.get('upgrade')!r}")
                self._upgraded, self._head = True, bytearray()
                self._opened.set_result(None)
                feed(self, rest, lambda: self._error is not None)
                return
            length = fields.get("content-length", "0")
            self._head_body = min(int(length), MAX_HEAD) if length.isdigit() else 0
            self._head = bytearray(rest)
        if len(self._head) >= self._head_body:
            body = bytes(self._head[: self._head_body])
            err = node_error(self._status, body)
            if self._status in (404, 405) and b'"unknown_lease"' not in body:
                err = StreamsNotOffered(f"{self.where} offers no block streams ({err})")
            self._fail(err)

    def _answer_header(self) -> None:
        answer = parse_answer(self._answer)
        if not self._waiting:
            raise IntegrityError(f"{self.where} answered a request nobody sent")
        waiting = self._waiting[0]
        waiting.status, waiting.digest = answer.status, answer.digest
        self._got, self._left = 0, answer.length
        if answer.status == OK and waiting.op == GET:
            if waiting.view is not None and answer.length > len(waiting.view):
                waiting.view, waiting.too_long = None, answer.length
        elif answer.length > MAX_ANSWER_PAYLOAD:
            raise IntegrityError(f"{self.where} sent an answer of {answer.length} bytes")
        else:
            self._payload = bytearray(answer.length)
        if not self._left:
            self._answered()

    def _answered(self) -> None:
        waiting = self._waiting.popleft()
        payload, self._payload = self._payload, None
        n, self._got, self._left = self._got, 0, 0
        if waiting.done.done():
            return
        if waiting.status != OK:
            waiting.done.set_exception(_refusal(bytes(payload or b"")))
        elif waiting.op == GET:
            if waiting.too_long:
                waiting.done.set_exception(
                    BufferTooSmall(
                        f"{self.where} sent {waiting.too_long} bytes, more than the buffer holds"
                    )
                )
            else:
                waiting.done.set_result((n, waiting.digest))
        else:
            try:
                waiting.done.set_result(json.loads(bytes(payload or b"")))
            except ValueError as exc:
                waiting.done.set_exception(IntegrityError(f"malformed block PUT answer: {exc}"))

    def _fail(self, err: Exception) -> None:
        if self._error is None:
            self._error = err
        if not self._opened.done():
            self._opened.set_exception(err)
        while self._waiting:
            waiting = self._waiting.popleft()
            if not waiting.done.done():
                waiting.done.set_exception(err)
        if self._transport is not None:
            self._transport.abort()


def _refusal(payload: bytes) -> Exception:
    """A refused request's error; the answer names the HTTP status the API would have used."""
    try:
        status = int(json.loads(payload)["status"])
    except (ValueError, KeyError, TypeError):
        status = 400
    return node_error(status, payload)


def feed(protocol: asyncio.BufferedProtocol, data: bytes, stop: Callable[[], bool]) -> None:
    """Hand ``protocol`` bytes that arrived before it took the connection over, through its
    own buffers, until they run out or ``stop()``."""
    view = memoryview(data)
    while view and not stop():
        buf = memoryview(protocol.get_buffer(len(view)))
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        view = view[n:]
        protocol.buffer_updated(n)
