"""Signed requests over aiohttp: the glue between ``nuclux.core.auth`` and HTTP.

Theory of operation
-------------------
The client signs exactly the request target aiohttp puts on the request line
(``URL.raw_path_qs``: percent-encoded path and query), the body's digest and the pinned
server's fingerprint, and sends ``Authorization`` and the digest's header. The digest is the
body's SHA-256 (``X-Nuclux-Content-SHA256``), or, for a share block PUT, the block's Merkle
root (``X-Nuclux-Content-Root``, ``docs/spec/auth.md`` section 2.1): the node computes that
root anyway, so a block is hashed once on each side instead of twice. The server rebuilds the
same fields from ``request.method``, ``request.raw_path`` and that header, and checks them with
its ``RequestVerifier``. The body is not read here: a handler that reads it must compare its
digest with the signed one before anything becomes visible (a mismatch is an
``IntegrityError``, HTTP 422), which is what lets a streamed upload be authenticated by one
signature over the digest of the whole body.

Time and nonces are read here (this is the I/O layer) unless the caller passes them.
"""

from __future__ import annotations

import hmac
import os
import time
from dataclasses import dataclass
from typing import Final

from aiohttp import web
from yarl import URL

from nuclux.core.auth import (
    EMPTY_SHA256,
    RequestFields,
    RequestVerifier,
    decode_authorization,
    encode_authorization,
    encode_content_sha256,
    sign_request,
)
from nuclux.core.types import Address
from nuclux.errors import IntegrityError, Unauthenticated

CONTENT_SHA256_HEADER: Final = "X-Nuclux-Content-SHA256"
CONTENT_ROOT_HEADER: Final = "X-Nuclux-Content-Root"
CAPABILITY_HEADER: Final = "X-Nuclux-Capability"


def signed_headers(
    private_key: bytes,
    method: str,
    url: URL,
    *,
    fingerprint: bytes,
    content_sha256: bytes | None = None,
    content_root: bytes | None = None,
    now: int | None = None,
    nonce: bytes | None = None,
) -> dict[str, str]:
    """Headers that authenticate one request to the server pinned by ``fingerprint``.
    ``content_sha256`` is the body's SHA-256 (``None``: no body); ``content_root`` instead
    is a share block's Merkle root (block PUTs only)."""
    if content_root is not None and content_sha256 is not None:
        raise ValueError("sign the body's SHA-256 or its block root, not both")
    digest = content_root if content_root is not None else content_sha256
    body_hash = EMPTY_SHA256 if digest is None else digest
    fields = RequestFields(method, url.raw_path_qs, body_hash)
    auth = sign_request(
        private_key,
        fields,
        fingerprint=fingerprint,
        timestamp=int(time.time()) if now is None else now,
        nonce=os.urandom(16) if nonce is None else nonce,
    )
    headers = {"Authorization": encode_authorization(auth)}
    if content_root is not None:
        headers[CONTENT_ROOT_HEADER] = encode_content_sha256(content_root)
    elif content_sha256 is not None:
        headers[CONTENT_SHA256_HEADER] = encode_content_sha256(content_sha256)
    return headers


@dataclass(frozen=True, slots=True)
class Authenticated:
    """Who sent a request, and the body digest they signed: ``content_sha256`` is the body's
    SHA-256, or None when ``content_root`` (a share block's Merkle root) was signed instead."""

    address: Address
    content_sha256: bytes | None
    content_root: bytes | None = None


def authenticate(
    request: web.BaseRequest, verifier: RequestVerifier, *, now: int | None = None
) -> Authenticated:
    """Check a request's signature, freshness and nonce (``Unauthenticated`` and its
    subclasses otherwise). The caller still checks the body against the signed digest."""
    sha = request.headers.get(CONTENT_SHA256_HEADER)
    root = request.headers.get(CONTENT_ROOT_HEADER)
    if sha is not None and root is not None:
        raise Unauthenticated(
            f"send {CONTENT_SHA256_HEADER} or {CONTENT_ROOT_HEADER}, not both: one digest is signed"
        )
    fields = RequestFields.from_http(
        request.method, request.raw_path, sha if root is None else root
    )
    auth = decode_authorization(request.headers.get("Authorization"))
    address = verifier.verify(auth, fields, now=int(time.time()) if now is None else now)
    if root is not None:
        return Authenticated(address, None, fields.content_sha256)
    return Authenticated(address, fields.content_sha256)


def check_body(signed: bytes | None, actual: bytes) -> None:
    """``IntegrityError`` unless the body that arrived has the signed SHA-256 (None: the
    request signed a block root, which only a block PUT takes)."""
    if signed is None:
        raise IntegrityError(
            f"{CONTENT_ROOT_HEADER} is for share block PUTs; sign this body's SHA-256 and send"
            f" it as {CONTENT_SHA256_HEADER}"
        )
    if not hmac.compare_digest(signed, actual):
        raise IntegrityError(
            f"the body's SHA-256 is {actual.hex()}, but the request signed {signed.hex()}:"
            " nothing was stored"
        )
