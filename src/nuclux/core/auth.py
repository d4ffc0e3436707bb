"""Request authentication: the client's Ethereum key signs each request, bound to the server.

Theory of operation
-------------------
Every request carries a secp256k1 signature by the client's Ethereum key over a
domain-separated, versioned message (the byte layout is frozen by golden vectors and
specified in ``docs/spec/auth.md``)::

    lp(b"nuclux/request/v1") lp(method) lp(path) lp(content_sha256) lp(fingerprint)
    lp(timestamp as 8 bytes) lp(nonce)          where lp(x) = len(x) as 2 bytes || x

The path is the raw request target (percent-encoded, with the query). ``content_sha256`` is
the body's digest: its SHA-256, or for a share block PUT the block's Merkle root (the path
says which, so one cannot stand for the other). ``fingerprint`` is
the SHA-256 of the server's certificate, so a signature made for one node is useless at any
other. The signature is ECDSA over sha256(message), 65 bytes ``r || s || recovery id`` with
low ``s``; the header names the signer, the verifier recovers the public key, derives its
address (the last 20 bytes of keccak256 of the key) and compares the two in constant time.

Freshness: a request is accepted while ``|now - timestamp| <= window``. Replays:
``ReplayGuard`` remembers each (signer, nonce) until ``timestamp + window``, after which the
timestamp alone refuses the request, so memory is what one window holds. Beyond
``max_entries`` the guard refuses new requests rather than forgetting a live nonce (which
would re-open a replay); only validly signed requests reach it, so the flood is attributable.

Nothing here reads a clock or a random source: ``now``, ``timestamp``, ``nonce`` and keys
are arguments. ``RequestVerifier`` bundles verification and the guard for a server.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import heapq
import hmac
import re
from dataclasses import dataclass
from typing import Final

from coincurve import PrivateKey, PublicKey
from Crypto.Hash import keccak

from nuclux.core.types import Address
from nuclux.errors import (
    IntegrityError,
    ReplayedRequest,
    StaleRequest,
    Unauthenticated,
    UsageError,
)

REQUEST_TAG: Final = b"nuclux/request/v1"
METHODS: Final = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE"})
MAX_PATH_BYTES: Final = 1024
NONCE_BYTES: Final = 16
SHA256_BYTES: Final = 32
SIGNATURE_BYTES: Final = 65
MAX_TIMESTAMP: Final = 2**64 - 1
EMPTY_SHA256: Final = hashlib.sha256(b"").digest()
DEFAULT_WINDOW: Final = 120
DEFAULT_MAX_ENTRIES: Final = 200_000
AUTH_SCHEME: Final = "Nuclux v1 "
AUTH_TOKEN_BYTES: Final = 20 + 8 + NONCE_BYTES + SIGNATURE_BYTES
MAX_AUTHORIZATION_CHARS: Final = 512
_SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_PATH = re.compile(r"/[\x21-\x7e]*")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


# -- secp256k1 and addresses (shared with nuclux.core.capability) ----------------------------


def keccak256(data: bytes) -> bytes:
    return keccak.new(digest_bits=256, data=data).digest()


def to_address(raw: bytes) -> Address:
    """The EIP-55 checksummed form of a 20-byte address."""
    return _checksummed(bytes(raw))


@functools.lru_cache(maxsize=1024)  # a node checks requests from a few consumers over and over
def _checksummed(raw: bytes) -> Address:
    hex_ = raw.hex()
    mask = keccak256(hex_.encode()).hex()[: len(hex_)]
    return Address(
        "0x" + "".join(c.upper() if m >= "8" else c for c, m in zip(hex_, mask, strict=True))
    )


def address_bytes(address: str) -> bytes:
    """The 20 bytes of a ``0x``-prefixed hex address (any case); ``UsageError`` otherwise."""
    if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
        raise UsageError(f"invalid address {address!r}: expected 0x and 40 hex digits")
    return bytes.fromhex(address[2:])


def _private_key(private_key: bytes) -> PrivateKey:
    return _key_pair(private_key)[0]


def _key_pair(private_key: bytes) -> tuple[PrivateKey, bytes]:
    """The key object of ``private_key`` and its 20-byte address, built once per key: a
    client signs every request and every manifest with the same few keys, and building the
    key (its public point) cost more than the signature."""
    if type(private_key) is not bytes or len(private_key) != 32:  # coincurve pads short ones
        raise UsageError("invalid private key: expected 32 bytes in the secp256k1 range")
    return _built_key_pair(private_key)


@functools.lru_cache(maxsize=8)
def _built_key_pair(private_key: bytes) -> tuple[PrivateKey, bytes]:
    try:
        key = PrivateKey(private_key)
    except (ValueError, TypeError):
        raise UsageError("invalid private key: expected 32 bytes in the secp256k1 range") from None
    return key, keccak256(key.public_key.format(compressed=False)[1:])[12:]


def signer_of(private_key: bytes) -> bytes:
    """The 20-byte address of a private key: keccak256(public key)[12:]."""
    return _key_pair(private_key)[1]


def sign_message(private_key: bytes, message: bytes) -> bytes:
    """Recoverable ECDSA over sha256(message): 65 bytes r || s || recovery id (low s)."""
    return bytes(_private_key(private_key).sign_recoverable(message))


def recover_signer(message: bytes, signature: bytes) -> bytes:
    """The 20-byte address whose key made ``signature`` over ``message``, or Unauthenticated."""
    if len(signature) != SIGNATURE_BYTES or signature[64] > 3:
        raise Unauthenticated("malformed signature: expected 65 bytes r || s || v (v 0-3)")
    s = int.from_bytes(signature[32:64], "big")
    if not 0 < s <= _SECP256K1_N // 2:
        raise Unauthenticated("non-canonical signature: s must be in the lower half")
    try:
        key = PublicKey.from_signature_and_message(signature, message)
    except (ValueError, TypeError):
        raise Unauthenticated("invalid signature: no public key recovers from it") from None
    return keccak256(key.format(compressed=False)[1:])[12:]


def owner_signed_part(data: bytes, prefix: bytes, what: str, owner_is: str) -> bytes:
    """For an encoding ``version || owner (20) || ... || signature (65)`` signed over
    ``prefix || everything before the signature``: the signed part, once the signature has been
    checked to recover to the owner it names; IntegrityError otherwise (altered or forged)."""
    unsigned, signature = data[:-SIGNATURE_BYTES], data[-SIGNATURE_BYTES:]
    owner = data[1:21]
    try:
        signer = recover_signer(prefix + unsigned, signature)
    except Unauthenticated as err:
        raise IntegrityError(f"{what} refused: {err}") from None
    if not hmac.compare_digest(signer, owner):
        raise IntegrityError(
            f"{what} refused: not signed by {owner_is} {to_address(owner)} (altered, or forged"
            f" by {to_address(signer)})"
        )
    return unsigned


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str, *, max_chars: int, what: str) -> bytes:
    """Strict unpadded base64url: canonical, bounded, or ``Unauthenticated``."""
    if not isinstance(text, str) or len(text) > max_chars or not _B64URL.fullmatch(text):
        raise Unauthenticated(f"malformed {what}: expected unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise Unauthenticated(f"malformed {what}: bad base64url length") from None
    if b64url_encode(data) != text:
        raise Unauthenticated(f"malformed {what}: non-canonical base64url")
    return data


# -- the signed request -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestFields:
    """What the server reconstructs from the request itself."""

    method: str
    path: str
    content_sha256: bytes = EMPTY_SHA256

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise UsageError(f"method {self.method!r} not signable: use one of {sorted(METHODS)}")
        path = self.path if isinstance(self.path, str) else ""
        if len(path) > MAX_PATH_BYTES or not path.isascii() or not _PATH.fullmatch(path):
            raise UsageError(
                f"path must be '/' then at most {MAX_PATH_BYTES - 1} visible ASCII characters"
                " (percent-encode the rest)"
            )
        if not isinstance(self.content_sha256, bytes) or len(self.content_sha256) != 32:
            raise UsageError("content_sha256 must be the 32-byte SHA-256 of the body")

    @classmethod
    def from_http(cls, method: str, raw_path: str, content_sha256: str | None) -> RequestFields:
        """Fields of an incoming request; ``content_sha256`` is the X-Nuclux-Content-SHA256
        header (absent means the empty body). Anything malformed is ``Unauthenticated``."""
        try:
            return cls(method, raw_path, decode_content_sha256(content_sha256))
        except UsageError as err:
            raise Unauthenticated(f"request cannot be authenticated: {err}") from None


@dataclass(frozen=True, slots=True)
class RequestAuth:
    """What the Authorization header carries: signer, timestamp, nonce, signature."""

    signer: bytes
    timestamp: int
    nonce: bytes
    signature: bytes

    def __post_init__(self) -> None:
        if len(self.signer) != 20 or len(self.nonce) != NONCE_BYTES:
            raise UsageError("signer must be 20 bytes and nonce 16 bytes")
        if len(self.signature) != SIGNATURE_BYTES or not 0 <= self.timestamp <= MAX_TIMESTAMP:
            raise UsageError("signature must be 65 bytes and timestamp an unsigned 64-bit int")

    @property
    def address(self) -> Address:
        return to_address(self.signer)


def request_message(
    fields: RequestFields, *, fingerprint: bytes, timestamp: int, nonce: bytes
) -> bytes:
    """The exact bytes that are signed (see the module docstring)."""
    if len(fingerprint) != SHA256_BYTES or len(nonce) != NONCE_BYTES:
        raise UsageError("fingerprint must be 32 bytes and nonce 16 bytes")
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise UsageError("timestamp must be unix seconds in 0..2**64-1")
    parts = (
        REQUEST_TAG,
        fields.method.encode("ascii"),
        fields.path.encode("ascii"),
        fields.content_sha256,
        fingerprint,
        timestamp.to_bytes(8, "big"),
        nonce,
    )
    return b"".join(len(p).to_bytes(2, "big") + p for p in parts)


def sign_request(
    private_key: bytes, fields: RequestFields, *, fingerprint: bytes, timestamp: int, nonce: bytes
) -> RequestAuth:
    """Sign ``fields`` for the server whose certificate has ``fingerprint``."""
    message = request_message(fields, fingerprint=fingerprint, timestamp=timestamp, nonce=nonce)
    key, signer = _key_pair(private_key)
    return RequestAuth(signer, timestamp, nonce, bytes(key.sign_recoverable(message)))


def check_fresh(timestamp: int, *, now: int, window: int) -> None:
    """``StaleRequest`` unless ``|now - timestamp| <= window``."""
    if abs(now - timestamp) > window:
        ahead = "ahead of" if timestamp > now else "behind"
        raise StaleRequest(
            f"request timestamp {timestamp} is {abs(now - timestamp)} s {ahead} the node's clock"
            f" ({now}); the window is ±{window} s: check the client's clock"
        )


def verify_request(
    auth: RequestAuth, fields: RequestFields, *, fingerprint: bytes, now: int, window: int
) -> Address:
    """The signer's address if ``auth`` is a fresh, valid signature of ``fields`` for this
    server. Stateless: pass the result through ``ReplayGuard.admit`` (or use
    ``RequestVerifier``), else a captured request can be replayed within the window."""
    check_fresh(auth.timestamp, now=now, window=window)
    message = request_message(
        fields, fingerprint=fingerprint, timestamp=auth.timestamp, nonce=auth.nonce
    )
    if not hmac.compare_digest(recover_signer(message, auth.signature), auth.signer):
        raise Unauthenticated(
            f"signature is not by {auth.address}: wrong key, or the request, body hash or"
            " server fingerprint differ from what was signed"
        )
    return auth.address


# -- headers --------------------------------------------------------------------------------------


def encode_authorization(auth: RequestAuth) -> str:
    token = auth.signer + auth.timestamp.to_bytes(8, "big") + auth.nonce + auth.signature
    return AUTH_SCHEME + b64url_encode(token)


def decode_authorization(value: str | None) -> RequestAuth:
    """Parse ``Nuclux v1 <base64url>``; anything else is ``Unauthenticated``."""
    if value is None:
        raise Unauthenticated("missing Authorization header: sign the request (Nuclux v1)")
    if not isinstance(value, str) or len(value) > MAX_AUTHORIZATION_CHARS:
        raise Unauthenticated("malformed Authorization header: too long or not text")
    if not value.startswith(AUTH_SCHEME):
        raise Unauthenticated("unsupported Authorization scheme: expected 'Nuclux v1 <token>'")
    token = b64url_decode(value[len(AUTH_SCHEME) :], max_chars=160, what="Authorization token")
    if len(token) != AUTH_TOKEN_BYTES:
        raise Unauthenticated(f"malformed Authorization token: expected {AUTH_TOKEN_BYTES} bytes")
    if token[-1] > 3:
        raise Unauthenticated("malformed Authorization token: signature recovery id above 3")
    return RequestAuth(token[:20], int.from_bytes(token[20:28], "big"), token[28:44], token[44:])


def encode_content_sha256(digest: bytes) -> str:
    return digest.hex()


def decode_content_sha256(value: str | None) -> bytes:
    """The content digest header, X-Nuclux-Content-SHA256 or X-Nuclux-Content-Root (64 hex
    digits); absent means the empty body."""
    if value is None:
        return EMPTY_SHA256
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise Unauthenticated("malformed content digest header: expected 64 hex digits")
    return bytes.fromhex(value)


# -- replay protection ------------------------------------------------------------------------


class ReplayGuard:
    """Remembers (signer, nonce) pairs for the freshness window, at most ``max_entries``."""

    __slots__ = ("_heap", "_seen", "max_entries", "window")

    def __init__(
        self, window_seconds: int = DEFAULT_WINDOW, max_entries: int = DEFAULT_MAX_ENTRIES
    ) -> None:
        if window_seconds <= 0 or max_entries <= 0:
            raise UsageError("ReplayGuard needs a positive window and a positive max_entries")
        self.window = window_seconds
        self.max_entries = max_entries
        self._seen: set[bytes] = set()
        self._heap: list[tuple[int, bytes]] = []  # (forget after, signer || nonce)

    def __len__(self) -> int:
        return len(self._seen)

    def __repr__(self) -> str:
        return f"ReplayGuard(window={self.window}, entries={len(self)}/{self.max_entries})"

    def admit(self, signer: bytes, nonce: bytes, timestamp: int, *, now: int) -> None:
        """Record a verified request; Stale/ReplayedRequest or busy ``Unauthenticated``."""
        check_fresh(timestamp, now=now, window=self.window)
        heap = self._heap
        while heap and heap[0][0] < now:
            self._seen.discard(heapq.heappop(heap)[1])
        key = signer + nonce
        if key in self._seen:
            raise ReplayedRequest("nonce already used: sign every request with a fresh nonce")
        if len(self._seen) >= self.max_entries:
            raise Unauthenticated(
                f"server busy: {self.max_entries} requests in the freshness window;"
                f" retry in {heap[0][0] - now + 1} s"
            )
        self._seen.add(key)
        heapq.heappush(heap, (timestamp + self.window, key))


class RequestVerifier:
    """A server's verifier: signature, freshness and replays, bound to its fingerprint."""

    __slots__ = ("fingerprint", "guard")

    def __init__(self, fingerprint: bytes, guard: ReplayGuard) -> None:
        if len(fingerprint) != SHA256_BYTES:
            raise UsageError("fingerprint must be the 32-byte SHA-256 of the certificate")
        self.fingerprint = fingerprint
        self.guard = guard

    def verify(self, auth: RequestAuth, fields: RequestFields, *, now: int) -> Address:
        address = verify_request(
            auth, fields, fingerprint=self.fingerprint, now=now, window=self.guard.window
        )
        self.guard.admit(auth.signer, auth.nonce, auth.timestamp, now=now)
        return address
