"""A consumer's client for one node: pinned TLS 1.3 and signed requests.

``NodeClient(endpoint, fingerprint, private_key)`` refuses a server whose certificate does not
hash to ``fingerprint`` (read from the registry) during the handshake, signs every request
with the consumer's Ethereum key bound to that fingerprint, and maps the node's JSON errors
back onto the ``NucluxError`` tree (401 ``Unauthenticated``, 403 ``Forbidden``, 404
``ObjectNotFound``, 422 ``IntegrityError``, 507 ``QuotaExceeded``, other 4xx ``UsageError``).
Downloads are checked against the SHA-256 the node reports when the whole object is read.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import aiohttp
from yarl import URL

from nuclux.errors import (
    Forbidden,
    IntegrityError,
    NucluxError,
    ObjectNotFound,
    QuotaExceeded,
    ReplayedRequest,
    StaleRequest,
    StoreError,
    Unauthenticated,
    UsageError,
)
from nuclux.net.signing import CAPABILITY_HEADER, CONTENT_SHA256_HEADER, signed_headers
from nuclux.net.tls import client_ssl_context, peer_errors

_BY_CODE: dict[str, type[NucluxError]] = {
    "unauthenticated": Unauthenticated,
    "stale_request": StaleRequest,
    "replayed_request": ReplayedRequest,
    "forbidden": Forbidden,
    "not_found": ObjectNotFound,
    "unknown_lease": ObjectNotFound,
    "integrity": IntegrityError,
    "quota_exceeded": QuotaExceeded,
    "capacity_exceeded": QuotaExceeded,
}


class NodeRequestError(NucluxError):
    """The node answered with an error this client has no closer class for."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"node error {status} {code}: {message}")
        self.status = status
        self.code = code


READ_BUFSIZE = 1 << 20  # a download keeps flowing while the caller handles a chunk
_THREAD_HASH_BYTES = 64 << 10  # smaller chunks are hashed inline (a hand-off costs more)


@dataclass(frozen=True, slots=True)
class StoredObject:
    object_id: bytes
    sha256: bytes
    size: int


class NodeClient:
    def __init__(
        self, endpoint: str, fingerprint: bytes, private_key: bytes, *, timeout: float = 60.0
    ) -> None:
        self.base = URL(endpoint)
        self.fingerprint = fingerprint
        self._key = private_key
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_ssl_context(fingerprint)),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=timeout, sock_read=timeout),
            read_bufsize=READ_BUFSIZE,
        )
        self._hash_pool: ThreadPoolExecutor | None = None

    def _hasher(self) -> ThreadPoolExecutor:
        if self._hash_pool is None:
            self._hash_pool = ThreadPoolExecutor(1, thread_name_prefix="nuclux-client-hash")
        return self._hash_pool

    async def close(self) -> None:
        await self._session.close()
        if self._hash_pool is not None:
            self._hash_pool.shutdown(wait=False)
            self._hash_pool = None

    async def __aenter__(self) -> NodeClient:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _url(self, lease_id: int, object_id: bytes | None = None) -> URL:
        path = f"/v1/leases/{lease_id}"
        if object_id is not None:
            if not 1 <= len(object_id) <= 64:
                raise UsageError("object ids are 1-64 bytes")
            path += f"/objects/{object_id.hex()}"
        return self.base.with_path(path)

    def _headers(
        self, method: str, url: URL, body_sha: bytes | None = None, capability: str | None = None
    ) -> dict[str, str]:
        h = signed_headers(
            self._key, method, url, fingerprint=self.fingerprint, content_sha256=body_sha
        )
        if capability:
            h[CAPABILITY_HEADER] = capability
        return h

    async def _raise_for(self, resp: aiohttp.ClientResponse) -> None:
        if resp.status < 400:
            return
        try:
            err = (await resp.json())["error"]
            code, message = str(err["code"]), str(err["message"])
        except (aiohttp.ContentTypeError, KeyError, TypeError, ValueError):
            code, message = "unknown", (await resp.text())[:200]
        cls = _BY_CODE.get(code)
        if cls is not None:
            raise cls(message)
        if resp.status == 400:
            raise UsageError(message)
        if resp.status >= 500 and code == "store":
            raise StoreError(message)
        raise NodeRequestError(resp.status, code, message)

    # ------------------------------------------------------------------ API

    async def info(self) -> dict[str, Any]:
        with peer_errors():
            async with self._session.get(self.base.with_path("/v1/info")) as resp:
                await self._raise_for(resp)
                out: dict[str, Any] = await resp.json()
                return out

    async def put(
        self, lease_id: int, object_id: bytes, data: bytes, sha256: bytes | None = None
    ) -> StoredObject:
        """Store ``data``; pass its ``sha256`` if already known (saves hashing it twice)."""
        url = self._url(lease_id, object_id)
        sha = sha256 if sha256 is not None else hashlib.sha256(data).digest()
        with peer_errors():
            headers = self._headers("PUT", url, sha)
            headers["Content-Length"] = str(len(data))
            async with self._session.put(url, data=_chunks(data), headers=headers) as resp:
                await self._raise_for(resp)
                body = await resp.json()
        return StoredObject(object_id, bytes.fromhex(body["sha256"]), int(body["size"]))

    async def get(
        self,
        lease_id: int,
        object_id: bytes,
        *,
        offset: int = 0,
        length: int | None = None,
        capability: str | None = None,
    ) -> bytes:
        chunks = [
            c
            async for c in self.stream(
                lease_id, object_id, offset=offset, length=length, capability=capability
            )
        ]
        return b"".join(chunks)

    async def get_into(
        self,
        lease_id: int,
        object_id: bytes,
        buffer: bytearray | memoryview,
        *,
        offset: int = 0,
        length: int | None = None,
        capability: str | None = None,
    ) -> int:
        """Read an object (or a range) into ``buffer`` and return the number of bytes read.

        Reusing one buffer across downloads avoids allocating (and page-faulting) a fresh
        object-sized one each time. A whole object is checked against the SHA-256 the node
        reports; a buffer too small for the data raises UsageError (nothing beyond it is
        written)."""
        view = memoryview(buffer).cast("B")
        if view.readonly:
            raise UsageError("get_into needs a writable buffer")
        pos = 0
        async for chunk in self.stream(
            lease_id, object_id, offset=offset, length=length, capability=capability
        ):
            end = pos + len(chunk)
            if end > len(view):
                raise UsageError(
                    f"the buffer of {len(view)} bytes is too small for object {object_id.hex()}"
                )
            view[pos:end] = chunk
            pos = end
        return pos

    async def stream(
        self,
        lease_id: int,
        object_id: bytes,
        *,
        offset: int = 0,
        length: int | None = None,
        capability: str | None = None,
    ) -> AsyncIterator[bytes]:
        url = self._url(lease_id, object_id)
        headers = self._headers("GET", url, capability=capability)
        whole = offset == 0 and length is None
        if not whole:
            end = "" if length is None else str(offset + length - 1)
            headers["Range"] = f"bytes={offset}-{end}"
        with peer_errors():
            async with self._session.get(url, headers=headers) as resp:
                await self._raise_for(resp)
                h = hashlib.sha256()
                hashing: asyncio.Future[None] | None = None  # the latest chunk handed off
                loop = asyncio.get_running_loop()
                async for chunk in resp.content.iter_any():
                    if not whole:
                        pass
                    elif len(chunk) < _THREAD_HASH_BYTES and (hashing is None or hashing.done()):
                        h.update(chunk)  # small, and nothing queued before it: inline is cheaper
                    else:  # in order (one thread), overlapping the next chunk's arrival
                        hashing = loop.run_in_executor(self._hasher(), h.update, chunk)
                    yield chunk
                if hashing is not None:
                    await hashing
                if whole and h.hexdigest() != resp.headers.get(CONTENT_SHA256_HEADER, ""):
                    raise IntegrityError(
                        f"object {object_id.hex()} of lease {lease_id} "
                        "does not match the hash the node reported"
                    )

    async def delete(self, lease_id: int, object_id: bytes) -> None:
        url = self._url(lease_id, object_id)
        with peer_errors():
            async with self._session.delete(url, headers=self._headers("DELETE", url)) as resp:
                await self._raise_for(resp)

    async def list(
        self, lease_id: int, *, after: bytes | None = None, limit: int = 1000
    ) -> list[StoredObject]:
        url = self._url(lease_id).with_path(f"/v1/leases/{lease_id}/objects")
        query = {"limit": str(limit)} | ({"after": after.hex()} if after else {})
        url = url.with_query(query)
        with peer_errors():
            async with self._session.get(url, headers=self._headers("GET", url)) as resp:
                await self._raise_for(resp)
                body = await resp.json()
        return [
            StoredObject(bytes.fromhex(x["id"]), bytes.fromhex(x["sha256"]), int(x["size"]))
            for x in body
        ]

    async def usage(self, lease_id: int) -> dict[str, Any]:
        url = self._url(lease_id)
        with peer_errors():
            async with self._session.get(url, headers=self._headers("GET", url)) as resp:
                await self._raise_for(resp)
                out: dict[str, Any] = await resp.json()
                return out


async def _chunks(data: bytes, size: int = 1 << 20) -> AsyncIterator[memoryview]:
    """Stream an (immutable) body in 1 MiB views: no copies, and the transport's flow control
    paces the upload."""
    view = memoryview(data)
    for i in range(0, len(data), size):
        yield view[i : i + size]
