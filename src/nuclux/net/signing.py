"""Signed requests over aiohttp: the glue between ``nuclux.core.auth`` and HTTP.

Theory of operation
-------------------
The client signs exactly the request target aiohttp puts on the request line
(``URL.raw_path_qs``: percent-encoded path and query), the body's SHA-256 and the pinned
server's fingerprint, and sends ``Authorization`` and ``X-Nuclux-Content-SHA256``. The server
rebuilds the same fields from ``request.method``, ``request.raw_path`` and that header, and
checks them with its ``RequestVerifier``. The body is not read here: a handler that reads it
must compare its SHA-256 with ``content_sha256`` before anything becomes visible (a mismatch
is an ``IntegrityError``, HTTP 422), which is what lets a streamed upload be authenticated by
one signature over the hash of the whole body.

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
from nuclux.errors import IntegrityError

CONTENT_SHA256_HEADER: Final = "X-Nuclux-Content-SHA256"
CAPABILITY_HEADER: Final = "X-Nuclux-Capability"


def signed_headers(
    private_key: bytes,
    method: str,
    url: URL,
    *,
    fingerprint: bytes,
    content_sha256: bytes | None = None,
    now: int | None = None,
    nonce: bytes | None = None,
) -> dict[str, str]:
    """Headers that authenticate one request to the server pinned by ``fingerprint``.
    ``content_sha256`` is the body's SHA-256 (``None``: no body)."""
    body_hash = EMPTY_SHA256 if content_sha256 is None else content_sha256
    fields = RequestFields(method, url.raw_path_qs, body_hash)
    auth = sign_request(
        private_key,
        fields,
        fingerprint=fingerprint,
        timestamp=int(time.time()) if now is None else now,
        nonce=os.urandom(16) if nonce is None else nonce,
    )
    headers = {"Authorization": encode_authorization(auth)}
    if content_sha256 is not None:
        headers[CONTENT_SHA256_HEADER] = encode_content_sha256(content_sha256)
    return headers


@dataclass(frozen=True, slots=True)
class Authenticated:
    """Who sent a request, and the body hash they signed."""

    address: Address
    content_sha256: bytes


def authenticate(
    request: web.BaseRequest, verifier: RequestVerifier, *, now: int | None = None
) -> Authenticated:
    """Check a request's signature, freshness and nonce (``Unauthenticated`` and its
    subclasses otherwise). The caller still checks the body against ``content_sha256``."""
    fields = RequestFields.from_http(
        request.method, request.raw_path, request.headers.get(CONTENT_SHA256_HEADER)
    )
    auth = decode_authorization(request.headers.get("Authorization"))
    address = verifier.verify(auth, fields, now=int(time.time()) if now is None else now)
    return Authenticated(address, fields.content_sha256)


def check_body(signed: bytes, actual: bytes) -> None:
    """``IntegrityError`` unless the body that arrived has the signed SHA-256."""
    if not hmac.compare_digest(signed, actual):
        raise IntegrityError(
            f"the body's SHA-256 is {actual.hex()}, but the request signed {signed.hex()}:"
            " nothing was stored"
        )
