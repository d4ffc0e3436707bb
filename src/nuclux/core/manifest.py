"""The manifest: how to find, check and decrypt one version of a file. Owner-signed.

Theory of operation
-------------------
A manifest has a plaintext **header** that anyone may read and check (owner, file id,
manifest version, creation time, the digest of the previous version, the key envelopes) and
an AES-256-GCM **body** only readers of the file can open: the size and either the file
itself (packed) or its layout (the data id its segments are sealed under, block size, k, n,
the cipher/erasure/Merkle suites, and per share its provider, lease and Merkle root), then
its name and media type. The owner signs the whole encoding with its Ethereum key, so
providers, auditors and readers without the file key can still tell that a manifest is
genuine and which version it is; readers with the key learn the rest.

Byte layout (integers big-endian; frozen by golden vectors, specified in
``docs/spec/manifest.md``)::

    format u8 = 1 | owner 20 | file_id 16 | version u32 (1..) | created_at u64
    | previous 32 (sha256 of the previous version's encoding; zeros for version 1)
    | body_nonce 12 | envelope count u8 (1..16) | envelopes 81 each (the owner's first)
    | body length u32 | body: AES-256-GCM(body key, body_nonce, body, aad = all of the above)
    | signature 65 (over sha256(lp(b"nuclux/manifest/v1") || all of the above))

    body key = HKDF-SHA256(ikm=file key, salt="", info=lp(b"nuclux/manifest-body/v1") || ref)

where ``ref`` is the 36-byte reference (owner || file id). Every version's body key comes
from the same file key, so ``body_nonce`` must be fresh random bytes for every encoding.

Versions: a file's content is fixed by its first manifest; repair (and a change of name or
envelopes) publishes version n+1, whose ``previous`` is the digest (sha256 of the whole
encoding) of version n, checked by ``check_successor``. ``previous`` lives in the header, not
the body, so anyone holding both versions (a provider, the chain anchor) can check the chain
without the file key. References name no version.

Share layout (``nuclux.core.erasure``): full segments seal to exactly ``k`` blocks of
``block_bytes``, so ``segment_bytes = k * block_bytes - 16``, and segment count and share size
follow from the file size: the body stores neither. Nor does it store per-block roots: a
1 GiB file in 4 MiB segments at n = 8 has 256 x 8 block roots (64 KiB, growing with the
file), against 84 bytes per share here. Each share's root is the Merkle root over its block
roots, so a downloader fetches a share's block roots from its provider and checks them
against the root in the manifest. A manifest is therefore at most ``MAX_MANIFEST_BYTES``
(7,285 bytes, under 8 KiB) whatever the file's size.

Packing: a file of at most ``INLINE_MAX_BYTES`` (4 KiB) may live inside the body instead of
as shares. At k = 4 a 4 KiB file would make blocks of about 1 KiB (four Merkle leaves), and the
share table for n = 8 (672 bytes) would be a sixth of the file: below that, one small object
replicated beats n tiny ones (each a request, an fsync and an index row on a provider).

Decoding is strict and checks the signature before anything else it reads: a changed,
truncated or extended encoding is ``IntegrityError``; an unknown format version, a size out
of bounds, or a malformed field in something the owner did sign is ``UsageError``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from nuclux.core.auth import (
    SIGNATURE_BYTES,
    address_bytes,
    owner_signed_part,
    sign_message,
    signer_of,
    to_address,
)
from nuclux.core.envelope import (
    ENVELOPE_BYTES,
    ENVELOPE_VERSION,
    FILE_KEY_BYTES,
    TAG_BYTES,
    lp,
    open_any,
)
from nuclux.core.reference import FILE_ID_BYTES, Reader, Reference
from nuclux.core.types import Address, LeaseId
from nuclux.errors import IntegrityError, UsageError

MANIFEST_TAG: Final = b"nuclux/manifest/v1"
BODY_KEY_TAG: Final = b"nuclux/manifest-body/v1"
FORMAT_VERSION: Final = 1
BODY_NONCE_BYTES: Final = 12
DIGEST_BYTES: Final = 32
NO_PREVIOUS: Final = bytes(DIGEST_BYTES)
MAX_VERSION: Final = 2**32 - 1
MAX_TIME: Final = 2**64 - 1
MAX_ENVELOPES: Final = 16
MAX_SHARES: Final = 64
INLINE_MAX_BYTES: Final = 4096
MIN_BLOCK_BYTES: Final = 1024  # erasure.MIN_BLOCK_BYTES
MAX_BLOCK_BYTES: Final = 16 * 2**20
MAX_SEGMENT_BYTES: Final = 64 * 2**20
MAX_SEGMENTS: Final = 2**32
MAX_SIZE: Final = 2**64 - 1
MAX_NAME_BYTES: Final = 255
# Unicode's control characters (general category Cc): exactly C0, DEL and C1, in every version
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f]")
MAX_MEDIA_TYPE_BYTES: Final = 127
DATA_ID_BYTES: Final = 32
CIPHER_SEGMENT_V1: Final = 1  # AES-256-GCM per segment, b"nuclux/segment/v1" (segment.py)
ERASURE_RS_CAUCHY_V1: Final = 1  # Reed-Solomon over a Cauchy matrix, headerless blocks
MERKLE_SHA256_V1: Final = 1  # RFC 9162-shaped sha256 tree, 1 KiB leaves: retired, refused
MERKLE_SHA256_V2: Final = 2  # the same tree over 256-byte leaves (merkle.py)
LAYOUT_INLINE: Final = 0
LAYOUT_SHARES: Final = 1

SHARE_ENTRY_BYTES: Final = 20 + 32 + DIGEST_BYTES
_HEAD_BYTES: Final = 1 + 20 + FILE_ID_BYTES + 4 + 8 + DIGEST_BYTES + BODY_NONCE_BYTES + 1
_META_MAX: Final = 1 + MAX_NAME_BYTES + 1 + MAX_MEDIA_TYPE_BYTES
_SPREAD_MAX: Final = 1 + 8 + DATA_ID_BYTES + 4 + 5 + MAX_SHARES * SHARE_ENTRY_BYTES + _META_MAX
_INLINE_MAX: Final = 1 + 8 + INLINE_MAX_BYTES + _META_MAX
MAX_BODY_BYTES: Final = max(_SPREAD_MAX, _INLINE_MAX) + TAG_BYTES
MAX_MANIFEST_BYTES: Final = (
    _HEAD_BYTES + MAX_ENVELOPES * ENVELOPE_BYTES + 4 + MAX_BODY_BYTES + SIGNATURE_BYTES
)
_MIN_BODY_BYTES: Final = 1 + 8 + 1 + 1 + TAG_BYTES
_MIN_MANIFEST_BYTES: Final = _HEAD_BYTES + ENVELOPE_BYTES + 4 + _MIN_BODY_BYTES + SIGNATURE_BYTES


# -- the body ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Share:
    """Where share ``i`` of a file is kept, and the Merkle root it must hash to."""

    provider: Address
    lease_id: LeaseId
    root: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "provider", to_address(address_bytes(self.provider)))


@dataclass(frozen=True, slots=True)
class Layout:
    """How a file too large to pack is spread (``nuclux.core.erasure``'s layout): segments
    sealed under ``data_id``, cut into ``k`` blocks of ``block_bytes`` and coded to
    ``n = len(shares)``; block ``i`` of every segment goes to share ``i``."""

    data_id: bytes
    block_bytes: int
    k: int
    shares: tuple[Share, ...]
    cipher: int = CIPHER_SEGMENT_V1
    erasure: int = ERASURE_RS_CAUCHY_V1
    merkle: int = MERKLE_SHA256_V2

    @property
    def n(self) -> int:
        return len(self.shares)

    @property
    def segment_bytes(self) -> int:
        """Plaintext bytes of a full segment: sealed, it is exactly ``k`` blocks."""
        return self.k * self.block_bytes - TAG_BYTES

    def segment_count(self, size: int) -> int:
        """max(1, ceil(size / segment_bytes)): the empty file is one empty segment."""
        return max(1, -(-size // self.segment_bytes))

    def share_size(self, size: int) -> int:
        """Bytes of every share: full blocks, then the last segment's shorter block."""
        last = self.segment_count(size) - 1
        sealed_last = size - last * self.segment_bytes + TAG_BYTES
        return last * self.block_bytes + -(-sealed_last // self.k)


@dataclass(frozen=True, slots=True)
class ManifestBody:
    """The secret part: ``inline`` (the packed file) or ``layout``, never both."""

    size: int
    inline: bytes | None = field(default=None, repr=False)
    layout: Layout | None = None
    name: str = ""
    media_type: str = ""


def inline_body(data: bytes, *, name: str = "", media_type: str = "") -> ManifestBody:
    """A body that carries the whole (small) file."""
    body = ManifestBody(len(data), inline=data, name=name, media_type=media_type)
    encode_body(body)
    return body


def spread_body(
    size: int,
    *,
    data_id: bytes,
    block_bytes: int,
    k: int,
    shares: list[Share] | tuple[Share, ...],
    name: str = "",
    media_type: str = "",
) -> ManifestBody:
    """A body for a file spread as ``len(shares)`` shares, any ``k`` of which rebuild it.
    ``data_id`` is the 32-byte id its segments were sealed under (fresh per upload)."""
    layout = Layout(data_id, block_bytes, k, tuple(shares))
    body = ManifestBody(size, layout=layout, name=name, media_type=media_type)
    encode_body(body)
    return body


def _u(value: object, lo: int, hi: int, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        top = "2**256-1" if hi == 2**256 - 1 else str(hi)
        raise UsageError(f"{what} must be an integer in {lo}..{top}, got {value!r}")
    return value


def _text(value: str, limit: int, what: str, *, ascii_only: bool) -> bytes:
    if not isinstance(value, str):
        raise UsageError(f"{what} must be text")
    try:
        raw = value.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{what} is not valid Unicode text") from None
    if len(raw) > limit:
        raise UsageError(f"{what} is {len(raw)} bytes; at most {limit} (UTF-8)")
    if ascii_only and not all(0x20 <= b <= 0x7E for b in raw):
        raise UsageError(f"{what} must be printable ASCII")
    _check_controls(value, what)
    return raw


def _check_controls(value: str, what: str) -> None:
    if _CONTROL.search(value):
        raise UsageError(f"{what} must not contain control characters")


def check_name(name: str) -> None:
    """``UsageError`` if a file name (text already) holds a control character."""
    _check_controls(name, "name")


def encode_name(name: str) -> bytes:
    """A file name as stored: UTF-8, at most 255 bytes, no control characters."""
    return _text(name, MAX_NAME_BYTES, "name", ascii_only=False)


def _layout(layout: Layout, size: int) -> bytes:
    if not isinstance(layout.data_id, bytes) or len(layout.data_id) != DATA_ID_BYTES:
        raise UsageError(f"the data id is {DATA_ID_BYTES} bytes")
    b = _u(layout.block_bytes, MIN_BLOCK_BYTES, MAX_BLOCK_BYTES, "block bytes")
    if b & (b - 1):
        raise UsageError(f"block bytes must be a power of two, not {b}")
    n = _u(layout.n, 2, MAX_SHARES, "share count n")
    k = _u(layout.k, 1, n - 1, "k (shares needed, below n)")
    if layout.segment_bytes > MAX_SEGMENT_BYTES:
        raise UsageError(f"k * block bytes - 16 exceeds the {MAX_SEGMENT_BYTES}-byte segment")
    if layout.segment_count(size) > MAX_SEGMENTS:
        raise UsageError(f"a file has at most {MAX_SEGMENTS} segments: use larger blocks")
    for value, known, what in (
        (layout.cipher, CIPHER_SEGMENT_V1, "cipher"),
        (layout.erasure, ERASURE_RS_CAUCHY_V1, "erasure code"),
        (layout.merkle, MERKLE_SHA256_V2, "Merkle tree"),
    ):
        if value != known:
            raise UsageError(f"unsupported {what} suite {value!r}: this version knows only {known}")
    out = [
        layout.data_id,
        b.to_bytes(4, "big"),
        bytes([k, n, layout.cipher, layout.erasure, layout.merkle]),
    ]
    for share in layout.shares:
        if not isinstance(share.root, bytes) or len(share.root) != DIGEST_BYTES:
            raise UsageError("a share root is 32 bytes")
        out += [
            address_bytes(share.provider),
            _u(share.lease_id, 1, 2**256 - 1, "lease id").to_bytes(32, "big"),
            share.root,
        ]
    return b"".join(out)


def encode_body(body: ManifestBody) -> bytes:
    """The canonical plaintext of a body; ``UsageError`` for any field out of bounds."""
    meta = lp1(encode_name(body.name))
    meta += lp1(_text(body.media_type, MAX_MEDIA_TYPE_BYTES, "media type", ascii_only=True))
    layout = body.layout
    if (body.inline is None) == (layout is None):
        raise UsageError("a manifest body has either inline data or a share layout")
    if body.inline is not None or layout is None:
        if not isinstance(body.inline, bytes) or len(body.inline) > INLINE_MAX_BYTES:
            raise UsageError(f"inline data is bytes, at most {INLINE_MAX_BYTES}")
        if body.size != len(body.inline):
            raise UsageError("the size of a packed file is the length of its inline data")
        return bytes([LAYOUT_INLINE]) + body.size.to_bytes(8, "big") + body.inline + meta
    size = _u(body.size, 0, MAX_SIZE, "file size")
    return bytes([LAYOUT_SHARES]) + size.to_bytes(8, "big") + _layout(layout, size) + meta


def lp1(data: bytes) -> bytes:
    """``len(data)`` as 1 byte, then ``data`` (callers bound the length to 255)."""
    return bytes([len(data)]) + data


def decode_body(plaintext: bytes) -> ManifestBody:
    """Parse a body's plaintext; anything non-canonical is ``UsageError``."""
    r = Reader(plaintext, "manifest body")
    kind, size = r.uint(1), r.uint(8)
    inline: bytes | None = None
    layout: Layout | None = None
    if kind == LAYOUT_INLINE:
        if size > INLINE_MAX_BYTES:
            raise r.fail(f"inline data of {size} bytes (at most {INLINE_MAX_BYTES})")
        inline = r.take(size)
    elif kind == LAYOUT_SHARES:
        data_id, block = r.take(DATA_ID_BYTES), r.uint(4)
        k, n, cipher, erasure, merkle = r.take(5)
        if n > MAX_SHARES:
            raise r.fail(f"{n} shares (at most {MAX_SHARES})")
        shares = tuple(
            Share(to_address(r.take(20)), LeaseId(r.uint(32)), r.take(DIGEST_BYTES))
            for _ in range(n)
        )
        layout = Layout(data_id, block, k, shares, cipher, erasure, merkle)
    else:
        raise r.fail(f"unknown layout {kind}")
    try:
        name = r.take(r.uint(1)).decode("utf-8")
        media_type = r.take(r.uint(1)).decode("ascii")
    except UnicodeDecodeError:
        raise r.fail("name or media type is not valid text") from None
    r.end()
    body = ManifestBody(size, inline, layout, name, media_type)
    try:
        canonical = encode_body(body) == plaintext
    except UsageError as err:
        raise r.fail(str(err)) from None
    if not canonical:  # pragma: no cover - every field above has exactly one encoding
        raise r.fail("non-canonical encoding")
    return body


# -- the signed manifest ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Manifest:
    """A manifest whose signature has been checked; the body is still sealed."""

    owner: Address
    file_id: bytes
    version: int
    created_at: int
    previous: bytes
    body_nonce: bytes
    envelopes: tuple[bytes, ...]
    sealed_body: bytes = field(repr=False)
    signature: bytes = field(repr=False)

    @property
    def reference(self) -> Reference:
        return Reference(self.owner, self.file_id)

    def encode(self) -> bytes:
        return _header(self) + self.sealed_body + self.signature

    @property
    def digest(self) -> bytes:
        """sha256 of the whole encoding: what version n+1 names as ``previous``."""
        return hashlib.sha256(self.encode()).digest()


def _header(m: Manifest) -> bytes:
    """Everything before the sealed body (the body's AAD), validated."""
    if not isinstance(m.file_id, bytes) or len(m.file_id) != FILE_ID_BYTES:
        raise UsageError(f"a file id is {FILE_ID_BYTES} bytes")
    version = _u(m.version, 1, MAX_VERSION, "manifest version")
    if not isinstance(m.previous, bytes) or len(m.previous) != DIGEST_BYTES:
        raise UsageError("previous is a 32-byte manifest digest")
    if (version == 1) != (m.previous == NO_PREVIOUS):
        raise UsageError("version 1 has no previous manifest; every later version names one")
    if not isinstance(m.body_nonce, bytes) or len(m.body_nonce) != BODY_NONCE_BYTES:
        raise UsageError(f"the body nonce is {BODY_NONCE_BYTES} bytes")
    _u(len(m.envelopes), 1, MAX_ENVELOPES, "number of key envelopes")
    for e in m.envelopes:
        if not isinstance(e, bytes) or len(e) != ENVELOPE_BYTES or e[0] != ENVELOPE_VERSION:
            raise UsageError(f"a key envelope is {ENVELOPE_BYTES} bytes of version 1")
    if len(set(m.envelopes)) != len(m.envelopes):
        raise UsageError("key envelopes must be distinct")
    body_len = _u(len(m.sealed_body), _MIN_BODY_BYTES, MAX_BODY_BYTES, "sealed body length")
    return b"".join(
        [
            bytes([FORMAT_VERSION]),
            address_bytes(m.owner),
            m.file_id,
            version.to_bytes(4, "big"),
            _u(m.created_at, 0, MAX_TIME, "created_at").to_bytes(8, "big"),
            m.previous,
            m.body_nonce,
            bytes([len(m.envelopes)]),
            *m.envelopes,
            body_len.to_bytes(4, "big"),
        ]
    )


def _signed(unsigned: bytes) -> bytes:
    return lp(MANIFEST_TAG) + unsigned


def body_key(file_key: bytes, reference: Reference) -> bytes:
    """The body's AES-256 key: HKDF of the file key, bound to the file."""
    if not isinstance(file_key, bytes) or len(file_key) != FILE_KEY_BYTES:
        raise UsageError("a file key is 32 bytes")
    info = lp(BODY_KEY_TAG) + reference.to_bytes()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=b"", info=info).derive(file_key)


def seal_manifest(
    owner_private_key: bytes,
    *,
    file_id: bytes,
    version: int,
    created_at: int,
    previous: bytes,
    envelopes: list[bytes] | tuple[bytes, ...],
    body: ManifestBody,
    file_key: bytes,
    body_nonce: bytes,
) -> Manifest:
    """Encrypt ``body`` and sign the manifest. ``envelopes[0]`` should seal ``file_key`` to
    the owner's X25519 key (``nuclux.core.envelope.seal_key`` with the reference bytes as
    context); ``body_nonce`` must be 12 fresh random bytes."""
    owner = to_address(signer_of(owner_private_key))
    plaintext = encode_body(body)
    draft = Manifest(
        owner,
        file_id,
        version,
        created_at,
        previous,
        body_nonce,
        tuple(envelopes),
        bytes(len(plaintext) + TAG_BYTES),
        b"",
    )
    header = _header(draft)
    key = body_key(file_key, draft.reference)
    sealed = AESGCM(key).encrypt(body_nonce, plaintext, header)
    return decode_manifest(
        header + sealed + sign_message(owner_private_key, _signed(header + sealed))
    )


def encode_manifest(m: Manifest) -> bytes:
    return m.encode()


def decode_manifest(data: bytes) -> Manifest:
    """Check the owner's signature, then parse. ``IntegrityError`` if the bytes are not
    exactly what the owner named in them signed; ``UsageError`` if malformed."""
    if not isinstance(data, bytes) or not _MIN_MANIFEST_BYTES <= len(data) <= MAX_MANIFEST_BYTES:
        raise UsageError(
            f"malformed manifest: {len(data) if isinstance(data, bytes) else '?'} bytes,"
            f" expected {_MIN_MANIFEST_BYTES}..{MAX_MANIFEST_BYTES}"
        )
    if data[0] != FORMAT_VERSION:
        raise UsageError(
            f"unknown manifest format {data[0]}: this Nuclux reads format {FORMAT_VERSION};"
            " upgrade to read it"
        )
    unsigned = owner_signed_part(data, lp(MANIFEST_TAG), "manifest", "its owner")
    owner, signature = data[1:21], data[-SIGNATURE_BYTES:]
    r = Reader(unsigned, "manifest")
    r.take(21)
    file_id, version, created_at = r.take(FILE_ID_BYTES), r.uint(4), r.uint(8)
    previous, body_nonce = r.take(DIGEST_BYTES), r.take(BODY_NONCE_BYTES)
    envelopes = tuple(r.take(ENVELOPE_BYTES) for _ in range(r.uint(1)))
    sealed = r.take(r.uint(4))
    r.end()
    m = Manifest(
        to_address(owner),
        file_id,
        version,
        created_at,
        previous,
        body_nonce,
        envelopes,
        sealed,
        signature,
    )
    try:
        canonical = m.encode() == data
    except UsageError as err:
        raise r.fail(str(err)) from None
    if not canonical:  # pragma: no cover - every field above has exactly one encoding
        raise r.fail("non-canonical encoding")
    return m


def open_manifest(m: Manifest, file_key: bytes) -> ManifestBody:
    """Decrypt and parse the body; ``IntegrityError`` if ``file_key`` is not this file's."""
    key = body_key(file_key, m.reference)
    try:
        plaintext = AESGCM(key).decrypt(m.body_nonce, m.sealed_body, _header(m))
    except InvalidTag:
        raise IntegrityError(
            f"manifest body of {m.reference} does not open: wrong file key for this file"
        ) from None
    return decode_body(plaintext)


def manifest_file_key(m: Manifest, x25519_private: bytes) -> bytes:
    """The file key, from whichever of the manifest's envelopes opens with this X25519 key."""
    return open_any(m.envelopes, recipient_private=x25519_private, context=m.reference.to_bytes())


def check_successor(previous: Manifest, successor: Manifest) -> None:
    """``IntegrityError`` unless ``successor`` is version n+1 of the same file naming
    ``previous`` as its predecessor."""
    if successor.reference != previous.reference:
        raise IntegrityError(f"{successor.reference} is another file than {previous.reference}")
    if successor.version != previous.version + 1 or successor.previous != previous.digest:
        raise IntegrityError(
            f"manifest version {successor.version} does not follow version {previous.version}"
            " (wrong number or previous digest): a fork or a replay"
        )


def require_version(m: Manifest, at_least: int) -> None:
    """``IntegrityError`` if ``m`` is older than a version already seen (a rollback)."""
    if m.version < at_least:
        raise IntegrityError(
            f"manifest version {m.version} of {m.reference} is older than version {at_least}"
            " already seen: the provider served a stale copy; try another"
        )
