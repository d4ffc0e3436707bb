"""The node's HTTP API (docs/spec/node-api.md): lease-scoped objects over TLS 1.3.

Theory of operation
-------------------
Every lease-scoped request is handled in the same order: parse and bound the path, check the
signature, freshness and nonce (401), look the lease up in the local chain view (no RPC; 404
if unknown), check the lease is an active storage lease of this provider and that the signer
is its consumer, or holds an owner-signed capability naming the object (403), then touch the
shard store. A PUT streams the body into a store writer that checks the signed SHA-256 and
the declared length before anything becomes visible (422), within the lease's quota (507).
Every failure is a JSON error body with a machine-readable code, produced in one middleware
from the ``NucluxError`` raised.

Storage protocol (``docs/spec/storage-protocol.md`` sections 2-3): ``GET .../shares/{fid}/{i}``
summarises a share from the block roots the store computed on write; ``POST .../revisions``
co-signs the next revision (``nuclux.node.revisions``, with the operator key, one lease at a
time); ``GET .../revisions/latest`` returns it with both signatures. Blocks of a share the
latest revision lists cannot be replaced or deleted (409 ``in_revision``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from nuclux.core.auth import RequestVerifier
from nuclux.core.batch import MAX_BATCH_BYTES
from nuclux.core.block_frames import PROTOCOL
from nuclux.core.capability import capability_from_header, verify_capability
from nuclux.core.lease import Lease, LeaseState
from nuclux.core.reference import parse_block_id, share_prefix
from nuclux.core.types import ResourceClass
from nuclux.core.units import GIB
from nuclux.errors import (
    Forbidden,
    NucluxError,
    ObjectNotFound,
    UsageError,
)
from nuclux.net.answers import bounded_json
from nuclux.net.signing import (
    CAPABILITY_HEADER,
    CONTENT_ROOT_HEADER,
    CONTENT_SHA256_HEADER,
    Authenticated,
    authenticate,
    check_body,
)
from nuclux.node import block_stream
from nuclux.node.batch import store_batch
from nuclux.node.block_stream import BlockStream, stored_json
from nuclux.node.compute.service import ComputeService
from nuclux.node.http_errors import (
    HttpError,
    error_body,
    error_fields,
    error_response,
    errors_as_json,
    revision_json,
)
from nuclux.node.revisions import RevisionDesk, RevisionSigner
from nuclux.node.shares import (
    MAX_REVISION_BODY,
    parse_revision_request,
)
from nuclux.node.store import ShardStore

MAX_FIELD_SIZE = 96 << 10  # one header field (a capability can be ~90 KiB)
READ_BUFSIZE = 1 << 20
API = "/v1"
CHUNK = 1 << 20
_LEASE = re.compile(r"^[1-9][0-9]{0,77}$")
_OBJECT = re.compile(r"^(?:[0-9a-f]{2}){1,64}$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_FILE_ID = re.compile(r"^[0-9a-f]{32}$")
_SHARE_INDEX = re.compile(r"^(?:0|[1-9][0-9]{0,2})$")
SERVING = (LeaseState.ACTIVE, LeaseState.ACTIVE_TICKETED)


class LeaseLookup(Protocol):
    """What the server needs of the chain view (``nuclux.node.follower.ChainView``)."""

    def lease(self, lease_id: int) -> Lease | None: ...

    @property
    def synced_block(self) -> int: ...

    @property
    def chain_time(self) -> int: ...


@dataclass
class NodeService:
    """The request handlers of one node, over its store, chain view and identity."""

    owner: str
    operator: str
    fingerprint: bytes
    chain_id: int
    store: ShardStore
    view: LeaseLookup
    verifier: RequestVerifier
    max_object_bytes: int = 4 << 30
    clock: Callable[[], int] = field(default=lambda: int(time.time()))
    draining: bool = False
    draining_fn: Callable[[], bool] | None = None  # the agent's view, when one runs
    refresh_fn: Callable[[], Awaitable[None]] | None = None  # catch the view up (one RPC)
    _refreshing: asyncio.Future[None] | None = None
    capacities: tuple[int, int, int] = (0, 0, 0)
    unit_bytes: int = GIB  # storage leases reserve units x this (tests shrink it)
    revision_signer: RevisionSigner | None = None  # the operator key: without it, no revisions
    compute: ComputeService | None = None  # compute jobs, when the node offers compute units
    _desk: RevisionDesk | None = None
    _active: int = 0  # requests being handled
    _stopping: bool = False
    _idle: asyncio.Event | None = None
    _streams: set[BlockStream] = field(default_factory=set)

    def app(self) -> web.Application:
        @web.middleware
        async def track(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            if self._stopping:
                resp = error_response(503, "shutting_down", "the node is shutting down")
                resp.force_close()
                return resp
            self._active += 1
            try:
                return await handler(request)
            finally:
                self._active -= 1
                if not self._active and self._idle is not None:
                    self._idle.set()

        app = web.Application(middlewares=[track, errors_as_json], client_max_size=0)
        r = app.router
        r.add_get(f"{API}/info", self.info)
        r.add_get(f"{API}/leases/{{lease}}", self.lease_info)
        r.add_get(f"{API}/leases/{{lease}}/objects", self.list_objects)
        r.add_post(f"{API}/leases/{{lease}}/objects", self.post_batch)
        r.add_put(f"{API}/leases/{{lease}}/objects/{{object}}", self.put)
        r.add_post(f"{API}/leases/{{lease}}/stream", self.open_stream)
        r.add_get(f"{API}/leases/{{lease}}/objects/{{object}}", self.get)
        r.add_delete(f"{API}/leases/{{lease}}/objects/{{object}}", self.delete)
        r.add_get(f"{API}/leases/{{lease}}/shares/{{fid}}/{{index}}", self.share)
        r.add_post(f"{API}/leases/{{lease}}/revisions", self.post_revision)
        r.add_get(f"{API}/leases/{{lease}}/revisions/latest", self.latest_revision)
        if self.compute is not None:
            self.compute.routes(r, API, _lease_number)
        return app

    async def finish_requests(self, timeout: float) -> bool:
        """Refuse new requests (503, connection closed) and wait up to ``timeout`` seconds for
        the ones being handled; True if none is left. Used on shutdown, after the listening
        socket is closed and before the runner closes connections (which drops any request
        body still arriving)."""
        self._stopping = True
        for stream in list(self._streams):
            stream.end()
        if not self._active:
            return True
        self._idle = asyncio.Event()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def runner(self, *, shutdown_timeout: float = 10.0) -> web.AppRunner:
        """The aiohttp runner every node uses (the daemon, tests and benchmarks alike)."""
        return web.AppRunner(
            self.app(),
            max_field_size=MAX_FIELD_SIZE,
            # an upload keeps flowing while the store writes the previous 4 MiB batch: up to
            # 2 x read_bufsize is buffered per connection before the socket is paused
            read_bufsize=READ_BUFSIZE,
            shutdown_timeout=shutdown_timeout,
            access_log=None,
        )

    # ------------------------------------------------------------------ checks

    def _ids(self, request: web.Request, with_object: bool) -> tuple[int, bytes]:
        lease = _lease_number(request.match_info["lease"])
        obj = b""
        if with_object:
            text = request.match_info["object"]
            if not _OBJECT.match(text):
                raise UsageError("object id must be 1-64 bytes written as lowercase hex")
            obj = bytes.fromhex(text)
        return lease, obj

    async def fresh_lease(self, lease_id: int, cls: ResourceClass = ResourceClass.STORAGE) -> Lease:
        """The lease from the local view; if it is unknown or not active there, the view may
        just lag the chain (a lease accepted a moment ago), so catch up once and look again.
        Catching up is single-flight: concurrent requests share one refresh."""
        try:
            return self._lease(lease_id, cls)
        except (HttpError, Forbidden):
            lease = self.view.lease(lease_id)
            stale = lease is None or lease.state in (LeaseState.NASCENT, LeaseState.TICKETED)
            if self.refresh_fn is None or not stale:
                raise
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self.refresh_fn())
        await asyncio.shield(self._refreshing)
        return self._lease(lease_id, cls)

    def _lease(self, lease_id: int, cls: ResourceClass = ResourceClass.STORAGE) -> Lease:
        lease = self.view.lease(lease_id)
        if lease is None:
            raise HttpError(
                404,
                "unknown_lease",
                f"this node does not know lease {lease_id} "
                f"(synced to block {self.view.synced_block}); retry shortly",
            )
        if lease.provider.lower() != self.owner.lower():
            raise Forbidden(f"lease {lease_id} is held by another provider")
        if lease.cls is not cls:
            raise Forbidden(f"lease {lease_id} is not a {cls.name.lower()} lease")
        if lease.state not in SERVING:
            raise Forbidden(f"lease {lease_id} is {lease.state.label}, not active")
        return lease

    async def _authorise(
        self,
        request: web.Request,
        *,
        write: bool,
        object_id: bytes | None = None,
        who: Authenticated | None = None,
    ) -> tuple[Lease, bytes | None]:
        lease_id, _ = self._ids(request, False)
        if who is None:
            who = authenticate(request, self.verifier, now=self.clock())
        lease = await self.fresh_lease(lease_id)
        if who.address.lower() == lease.consumer.lower():
            await self.store.ensure_lease(lease.id, lease.units * self.unit_bytes)
            return lease, who.content_sha256
        header = request.headers.get(CAPABILITY_HEADER)
        if write or header is None or object_id is None:
            raise Forbidden(f"{who.address} is not the consumer of lease {lease_id}")
        cap = capability_from_header(header)
        verify_capability(
            cap,
            now=self.view.chain_time,  # expiry is judged by chain time (ARCHITECTURE, Time)
            grantee=who.address,
            lease_id=lease_id,
            lease_owner=lease.consumer,
            object_id=object_id,
        )
        return lease, who.content_sha256

    # ------------------------------------------------------------------ handlers

    async def info(self, request: web.Request) -> web.Response:
        cap = await self.store.capacity()
        return web.json_response(
            {
                "storage": {
                    "offered_bytes": cap.offered,
                    "reserved_bytes": cap.reserved,
                    "used_bytes": cap.used,
                    "leases": cap.leases,
                },
                "api": 1,
                "provider": self.owner,
                "operator": self.operator,
                "fingerprint": self.fingerprint.hex(),
                "chain_id": self.chain_id,
                "synced_block": self.view.synced_block,
                "draining": self.draining_fn() if self.draining_fn else self.draining,
                "capacity": {
                    "storage_gib": self.capacities[0],
                    "compute_units": self.capacities[1],
                    "egress_gib": self.capacities[2],
                },
                "compute": None if self.compute is None else self.compute.info(),
            }
        )

    async def lease_info(self, request: web.Request) -> web.Response:
        lease, _ = await self._authorise(request, write=True)
        usage = await self.store.lease_usage(lease.id)
        return web.json_response(
            {
                "lease": lease.id,
                "state": lease.state.label,
                "quota_bytes": usage.quota_bytes,
                "used_bytes": usage.used_bytes,
                "objects": usage.objects,
            }
        )

    async def put(self, request: web.Request) -> web.Response:
        lease_id, object_id = self._ids(request, True)
        size = request.content_length
        if size is None:
            raise UsageError("PUT needs a Content-Length")
        if size > self.max_object_bytes:
            raise HttpError(
                413,
                "too_large",
                f"objects are limited to {self.max_object_bytes} bytes on this node",
            )
        block = parse_block_id(object_id) is not None
        if CONTENT_SHA256_HEADER not in request.headers and not (
            block and CONTENT_ROOT_HEADER in request.headers
        ):
            raise UsageError(
                f"PUT needs {CONTENT_SHA256_HEADER}, the signed body hash"
                + (f" (or {CONTENT_ROOT_HEADER}, the block's Merkle root)" if block else "")
            )
        who = authenticate(request, self.verifier, now=self.clock())
        if who.content_root is not None and not block:
            raise UsageError(f"{CONTENT_ROOT_HEADER} is for share blocks only; sign the SHA-256")
        await self._authorise(request, write=True, who=who)
        if block:  # refuse at once rather than after the body
            await self.store.check_writable(lease_id, object_id)
        async with self.store.writer(
            lease_id,
            object_id,
            size=size,
            sha256=who.content_sha256,
            merkle_root=who.content_root,
            created_at=self.clock(),
        ) as w:
            async for chunk in request.content.iter_any():
                await w.write(chunk)
            info = await w.commit()
        return web.json_response(stored_json(info), status=201)

    async def open_stream(self, request: web.Request) -> web.StreamResponse:
        """A block stream on the lease (``block_stream``; ``spec/node-api.md`` section 9)."""
        if request.headers.get("Upgrade", "").lower() != PROTOCOL:
            raise UsageError(f"a block stream is opened with Upgrade: {PROTOCOL}")
        if request.content_length:
            raise UsageError("the request opening a block stream has no body")
        lease, _ = await self._authorise(request, write=True)
        return await block_stream.serve(self, request, lease.id)

    async def stream_lease(self, lease_id: int) -> None:
        lease = self._lease(lease_id)
        await self.store.ensure_lease(lease.id, lease.units * self.unit_bytes)

    def refusal(self, err: NucluxError) -> dict[str, Any]:
        status, code, message, extra = error_fields(err)
        return error_body(code, message, extra) | {"status": status}

    def track_stream(self, stream: BlockStream) -> None:
        """Remember an open stream, to end it on shutdown (``finish_requests``)."""
        self._streams.add(stream)
        stream.closed.add_done_callback(lambda _: self._streams.discard(stream))

    async def post_batch(self, request: web.Request) -> web.Response:
        """Many small objects in one body (``nuclux.core.batch``; ``node/batch.py``)."""
        lease_id, _ = self._ids(request, False)
        size = request.content_length
        if size is None:
            raise UsageError("POST needs a Content-Length")
        if size > MAX_BATCH_BYTES:
            raise HttpError(413, "too_large", f"a batch is at most {MAX_BATCH_BYTES} bytes")
        if CONTENT_SHA256_HEADER not in request.headers:
            raise UsageError(f"POST needs {CONTENT_SHA256_HEADER}, the signed body hash")
        _, sha = await self._authorise(request, write=True)
        body = await request.read()
        check_body(sha, hashlib.sha256(body).digest())
        stored = await store_batch(self.store, lease_id, body, created_at=self.clock())
        return web.json_response({"objects": stored}, status=201)

    async def get(self, request: web.Request) -> web.StreamResponse:
        lease_id, object_id = self._ids(request, True)
        await self._authorise(request, write=False, object_id=object_id)
        async with self.store.open_read(lease_id, object_id) as obj:  # one index round trip
            info = obj.info
            offset, length = _parse_range(request.headers.get("Range"), info.size)
            partial = request.headers.get("Range") is not None
            resp = web.StreamResponse(status=206 if partial else 200)
            resp.content_length = length
            digest_header = CONTENT_ROOT_HEADER if info.root_digest else CONTENT_SHA256_HEADER
            resp.headers[digest_header] = info.sha256.hex()
            resp.headers["Accept-Ranges"] = "bytes"
            if partial:
                resp.headers["Content-Range"] = f"bytes {offset}-{offset + length - 1}/{info.size}"
            await resp.prepare(request)
            if request.method != "HEAD" and length > 0:
                async with contextlib.aclosing(obj.chunks(offset, length, CHUNK)) as chunks:
                    async for chunk in chunks:
                        await resp.write(chunk)
        await resp.write_eof()
        return resp

    async def delete(self, request: web.Request) -> web.Response:
        lease_id, object_id = self._ids(request, True)
        await self._authorise(request, write=True)
        await self.store.delete(lease_id, object_id)
        return web.Response(status=204)

    async def list_objects(self, request: web.Request) -> web.Response:
        lease_id, _ = self._ids(request, False)
        await self._authorise(request, write=True)
        after_text = request.query.get("after")
        if after_text is not None and not _OBJECT.match(after_text):
            raise UsageError("after must be an object id in lowercase hex")
        try:
            limit = int(request.query.get("limit", "1000"))
        except ValueError:
            raise UsageError("limit must be a number from 1 to 1000") from None
        items = await self.store.list_objects(
            lease_id, after=bytes.fromhex(after_text) if after_text else None, limit=limit
        )
        body: list[dict[str, Any]] = [{"id": i.object_id.hex()} | stored_json(i) for i in items]
        return web.json_response(body)

    # ------------------------------------------------------------------ storage protocol

    async def share(self, request: web.Request) -> web.Response:
        lease_id, _ = self._ids(request, False)
        fid, index = request.match_info["fid"], request.match_info["index"]
        if not _FILE_ID.match(fid) or not _SHARE_INDEX.match(index) or int(index) > 255:
            raise UsageError("a share is named by a 32-hex-digit file id and an index 0..255")
        file_id, i = bytes.fromhex(fid), int(index)
        # a capability holder needs one covering the share's prefix (a file's prefix does)
        await self._authorise(request, write=False, object_id=share_prefix(file_id, i))
        summary = await self.store.share(lease_id, file_id, i)
        if summary is None:
            raise ObjectNotFound(f"lease {lease_id} holds no block of share {i} of file {fid}")
        return web.json_response(
            {
                "blocks": summary.blocks,
                "block_bytes": summary.block_bytes,
                "leaf_count": summary.leaf_count,
                "size": summary.size,
                "share_root": summary.root.hex(),
                "block_roots": [r.hex() for r in summary.block_roots],
            }
        )

    async def post_revision(self, request: web.Request) -> web.Response:
        self._ids(request, False)
        size = request.content_length
        if size is None:
            raise UsageError("POST needs a Content-Length")
        if size > MAX_REVISION_BODY:
            raise HttpError(
                413, "too_large", f"a revision request is at most {MAX_REVISION_BODY} bytes"
            )
        if CONTENT_SHA256_HEADER not in request.headers:
            raise UsageError(f"POST needs {CONTENT_SHA256_HEADER}, the signed body hash")
        lease, sha = await self._authorise(request, write=True)
        body = await request.read()
        check_body(sha, hashlib.sha256(body).digest())
        # up to 4 MiB of JSON and 65,536 entries: decode in a thread, not on the event loop
        req = await asyncio.to_thread(
            lambda: parse_revision_request(bounded_json(body, max_depth=8))
        )
        if self.revision_signer is None:
            raise HttpError(503, "no_signer", "this node has no operator key to co-sign with")
        desk = self._desk
        if desk is None or desk.store is not self.store or desk.signer is not self.revision_signer:
            desk = self._desk = RevisionDesk(self.store, self.revision_signer, self.clock)
        signature = await desk.co_sign(lease.id, lease.consumer, req)
        return web.json_response({"signature": signature.hex()}, status=201)

    async def latest_revision(self, request: web.Request) -> web.Response:
        lease, _ = await self._authorise(request, write=True)
        latest = await self.store.latest_revision(lease.id)
        if latest is None:
            raise ObjectNotFound(f"lease {lease.id} has no co-signed revision yet")
        return web.json_response(revision_json(latest))


def _lease_number(text: str) -> int:
    if not _LEASE.match(text):
        raise UsageError("lease id must be a decimal number from 1 to 2^256-1")
    return int(text)


def _parse_range(header: str | None, size: int) -> tuple[int, int]:
    """(offset, length) of a single ``bytes=`` range, or the whole object."""
    if header is None:
        return 0, size
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        raise HttpError(416, "bad_range", f"unsupported Range {header!r}; use bytes=a-b")
    if not m.group(1):  # suffix: the last n bytes
        n = int(m.group(2))
        if n == 0:
            raise HttpError(416, "bad_range", "an empty suffix range")
        n = min(n, size)
        return size - n, n
    start = int(m.group(1))
    end = int(m.group(2)) if m.group(2) else size - 1
    if start >= size or end < start:
        raise HttpError(416, "bad_range", f"range {header!r} is outside the object ({size} B)")
    end = min(end, size - 1)
    return start, end - start + 1
