"""Manifests: golden vectors (recomputed, and read again with the primitives alone), round
trips, every flipped byte, truncation and extension, wrong keys, forgeries, strict decoding
of what the owner signed, bounds, and the version chain."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from coincurve import PublicKey
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from nuclux.core.auth import keccak256, sign_message, to_address
from nuclux.core.envelope import ENVELOPE_BYTES, lp, seal_key, x25519_public
from nuclux.core.manifest import (
    INLINE_MAX_BYTES,
    MANIFEST_TAG,
    MAX_ENVELOPES,
    MAX_MANIFEST_BYTES,
    MAX_MEDIA_TYPE_BYTES,
    MAX_NAME_BYTES,
    MAX_SHARES,
    NO_PREVIOUS,
    Layout,
    Manifest,
    ManifestBody,
    Share,
    body_key,
    check_successor,
    decode_body,
    decode_manifest,
    encode_body,
    encode_manifest,
    inline_body,
    manifest_file_key,
    open_manifest,
    require_version,
    seal_manifest,
    spread_body,
)
from nuclux.core.reference import Reference
from nuclux.core.types import LeaseId
from nuclux.errors import IntegrityError, UsageError

VECTOR: dict[str, Any] = json.loads(
    (Path(__file__).parent / "vectors" / "manifest.json").read_text(encoding="utf-8")
)
OWNER_KEY = bytes.fromhex(VECTOR["owner_private_key"])
OWNER = VECTOR["owner"]
OWNER_X = bytes.fromhex(VECTOR["owner_x25519_private"])
FRIEND_X = bytes.fromhex(VECTOR["friend_x25519_private"])
FILE_KEY = bytes.fromhex(VECTOR["file_key"])
V1, V2, INLINE = VECTOR["manifests"]
MALLORY_KEY = hashlib.sha256(b"nuclux-test/mallory").digest()
FILE_ID = bytes.fromhex(V1["file_id"])
REF = Reference(OWNER, FILE_ID)


def build(vec: dict[str, Any]) -> Manifest:
    """Recompute a vector from its inputs."""
    ref = Reference(OWNER, bytes.fromhex(vec["file_id"]))
    envelopes = [
        seal_key(
            FILE_KEY,
            recipient_public=x25519_public(recipient),
            ephemeral_private=bytes.fromhex(ephemeral),
            context=ref.to_bytes(),
        )
        for recipient, ephemeral in zip((OWNER_X, FRIEND_X), vec["ephemeral_private"], strict=False)
    ]
    b = vec["body"]
    if "inline" in b:
        body = inline_body(bytes.fromhex(b["inline"]), name=b["name"], media_type=b["media_type"])
    else:
        shares = [
            Share(s["provider"], LeaseId(int(s["lease_id"])), bytes.fromhex(s["root"]))
            for s in b["shares"]
        ]
        body = spread_body(
            b["size"],
            data_id=bytes.fromhex(b["data_id"]),
            block_bytes=b["block_bytes"],
            k=b["k"],
            shares=shares,
            name=b["name"],
            media_type=b["media_type"],
        )
    return seal_manifest(
        OWNER_KEY,
        file_id=ref.file_id,
        version=vec["version"],
        created_at=vec["created_at"],
        previous=bytes.fromhex(vec["previous"]),
        envelopes=envelopes,
        body=body,
        file_key=FILE_KEY,
        body_nonce=bytes.fromhex(vec["body_nonce"]),
    )


DATA_ID = b"\xda" * 32


def spread(n: int = 3, k: int = 2, size: int = 10_000_000, **changes: Any) -> ManifestBody:
    shares = [
        Share(to_address(bytes([i + 1]) * 20), LeaseId(100 + i), bytes([i]) * 32) for i in range(n)
    ]
    args: dict[str, Any] = {"data_id": DATA_ID, "block_bytes": 2**16, "k": k, "shares": shares}
    args.update(changes)
    return spread_body(size, **args)


def owner_envelope(ref: Reference = REF, ephemeral: bytes = b"\x05" * 32) -> bytes:
    return seal_key(
        FILE_KEY,
        recipient_public=x25519_public(OWNER_X),
        ephemeral_private=ephemeral,
        context=ref.to_bytes(),
    )


def seal(body: ManifestBody | None = None, *, key: bytes = OWNER_KEY, **changes: Any) -> Manifest:
    args: dict[str, Any] = {
        "file_id": FILE_ID,
        "version": 1,
        "created_at": 1_700_000_000,
        "previous": NO_PREVIOUS,
        "envelopes": [owner_envelope()],
        "body": spread() if body is None else body,
        "file_key": FILE_KEY,
        "body_nonce": bytes(12),
    }
    args.update(changes)
    return seal_manifest(key, **args)


def craft(plaintext: bytes, *, header: bytes | None = None, key: bytes = OWNER_KEY) -> bytes:
    """Sign arbitrary bytes as the owner would: to test what decoding refuses after the
    signature has passed."""
    m = seal()
    if header is None:
        head = m.encode()[: len(m.encode()) - len(m.sealed_body) - 65]
        head = head[:-4] + (len(plaintext) + 16).to_bytes(4, "big")
    else:
        head = header
    sealed = AESGCM(body_key(FILE_KEY, REF)).encrypt(bytes(12), plaintext, head)
    unsigned = head + sealed
    return unsigned + sign_message(key, lp(MANIFEST_TAG) + unsigned)


# -- golden vectors ---------------------------------------------------------------------------


@pytest.mark.parametrize("vec", [V1, V2, INLINE], ids=lambda v: v["name"])
def test_golden_vectors(vec: dict[str, Any]) -> None:
    m = build(vec)
    assert m.encode().hex() == vec["encoded"]
    assert encode_manifest(m) == bytes.fromhex(vec["encoded"])
    assert m.digest.hex() == vec["digest"]
    decoded = decode_manifest(bytes.fromhex(vec["encoded"]))
    assert decoded == m
    assert decoded.owner == OWNER
    assert manifest_file_key(decoded, OWNER_X) == FILE_KEY
    body = open_manifest(decoded, FILE_KEY)
    assert encode_body(body).hex() == vec["body_plaintext"]
    assert body.name == vec["body"]["name"]
    assert body.size == vec["body"]["size"]
    if body.layout is not None:
        assert body.layout.segment_count(body.size) == vec["body"]["segment_count"]
        assert body.layout.share_size(body.size) == vec["body"]["share_size"]
        assert body.layout.n == len(vec["body"]["shares"])


def test_vector_follows_the_spec() -> None:
    """Read v2 with the primitives alone, at the offsets docs/spec/manifest.md gives."""
    data = bytes.fromhex(V2["encoded"])
    assert data[0] == 1
    assert to_address(data[1:21]) == OWNER
    assert data[21:37] == FILE_ID
    assert int.from_bytes(data[37:41], "big") == 2
    assert int.from_bytes(data[41:49], "big") == V2["created_at"]
    assert (
        data[49:81]
        == bytes.fromhex(V1["digest"])
        == hashlib.sha256(bytes.fromhex(V1["encoded"])).digest()
    )
    nonce = data[81:93]
    count = data[93]
    assert count == 2
    end = 94 + count * ENVELOPE_BYTES
    body_len = int.from_bytes(data[end : end + 4], "big")
    header, sealed, signature = data[: end + 4], data[end + 4 : -65], data[-65:]
    assert len(sealed) == body_len
    key = PublicKey.from_signature_and_message(signature, lp(MANIFEST_TAG) + header + sealed)
    assert keccak256(key.format(compressed=False)[1:])[12:] == data[1:21]
    tag = b"nuclux/manifest-body/v1"
    info = len(tag).to_bytes(2, "big") + tag + data[1:37]
    bkey = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"", info=info).derive(FILE_KEY)
    assert bkey.hex() == V2["body_key"]
    plaintext = AESGCM(bkey).decrypt(nonce, sealed, header)
    assert plaintext.hex() == V2["body_plaintext"]
    assert plaintext[0] == 1  # shares
    assert int.from_bytes(plaintext[1:9], "big") == 1_000_000_000
    assert plaintext[9:41].hex() == V2["body"]["data_id"]
    assert int.from_bytes(plaintext[41:45], "big") == 2**20  # block bytes
    assert plaintext[45:50] == bytes([2, 3, 1, 1, 2])  # k, n, suites (Merkle suite 2)
    assert to_address(plaintext[50:70]) == V2["body"]["shares"][0]["provider"]


def test_version_chain() -> None:
    v1, v2 = (
        decode_manifest(bytes.fromhex(V1["encoded"])),
        decode_manifest(bytes.fromhex(V2["encoded"])),
    )
    check_successor(v1, v2)
    assert v1.reference == v2.reference == REF
    assert manifest_file_key(v2, FRIEND_X) == FILE_KEY
    with pytest.raises(IntegrityError, match="does not follow"):
        check_successor(v2, v1)
    with pytest.raises(IntegrityError, match="does not follow"):
        check_successor(v1, seal(version=2, previous=b"\x01" * 32))
    inline = decode_manifest(bytes.fromhex(INLINE["encoded"]))
    with pytest.raises(IntegrityError, match="another file"):
        check_successor(inline, v2)
    require_version(v2, 2)
    with pytest.raises(IntegrityError, match="stale"):
        require_version(v1, 2)


def test_inline_vector() -> None:
    m = decode_manifest(bytes.fromhex(INLINE["encoded"]))
    body = open_manifest(m, manifest_file_key(m, OWNER_X))
    assert body.inline == b"hello, nuclux\n"
    assert body.layout is None
    assert body.media_type == "text/plain; charset=utf-8"


# -- tampering ------------------------------------------------------------------------------------


@pytest.mark.parametrize("vec", [V2, INLINE], ids=lambda v: v["name"])
def test_every_flipped_byte_is_refused(vec: dict[str, Any]) -> None:
    data = bytes.fromhex(vec["encoded"])
    for position in range(len(data)):
        for mask in (0x01, 0x80):
            bad = bytearray(data)
            bad[position] ^= mask
            error = UsageError if position == 0 else IntegrityError
            with pytest.raises(error):
                decode_manifest(bytes(bad))


def test_truncated_or_extended_is_refused() -> None:
    data = bytes.fromhex(V2["encoded"])
    for cut in range(len(data)):
        with pytest.raises((IntegrityError, UsageError)):
            decode_manifest(data[:cut])
    for extra in (b"\x00", b"\x00" * 65, data[-65:]):
        with pytest.raises(IntegrityError):
            decode_manifest(data + extra)
    with pytest.raises(UsageError, match="malformed manifest"):
        decode_manifest(data + bytes(MAX_MANIFEST_BYTES))
    with pytest.raises(UsageError):
        decode_manifest("text")  # type: ignore[arg-type]


def test_forgery_is_refused() -> None:
    forged = seal(key=MALLORY_KEY)
    data = bytearray(forged.encode())
    data[1:21] = bytes.fromhex(OWNER[2:])  # claim the owner; signature by mallory
    with pytest.raises(IntegrityError, match="not signed by its owner"):
        decode_manifest(bytes(data))
    data[-65 + 32 : -1] = (2**256 - 1).to_bytes(32, "big")  # high s
    with pytest.raises(IntegrityError, match="non-canonical signature"):
        decode_manifest(bytes(data))


def test_wrong_keys_are_refused() -> None:
    m = decode_manifest(bytes.fromhex(V1["encoded"]))
    with pytest.raises(IntegrityError, match="wrong file key"):
        open_manifest(m, b"\x00" * 32)
    with pytest.raises(IntegrityError, match="not shared with this account"):
        manifest_file_key(m, FRIEND_X)  # v1 has only the owner's envelope
    other = decode_manifest(bytes.fromhex(INLINE["encoded"]))
    # An envelope or body moved to another file does not open there.
    moved = dataclasses.replace(other, envelopes=m.envelopes)
    with pytest.raises(IntegrityError):
        manifest_file_key(moved, OWNER_X)
    with pytest.raises(IntegrityError):
        open_manifest(dataclasses.replace(m, sealed_body=other.sealed_body), FILE_KEY)


def test_decoding_checks_what_the_owner_signed() -> None:
    good = encode_body(spread())
    assert decode_manifest(craft(good)).version == 1
    m = decode_manifest(craft(good))
    assert open_manifest(m, FILE_KEY) == spread()
    head = craft(good)[: -len(good) - 16 - 65]
    bad_headers = {
        "version 0": head[:37] + bytes(4) + head[41:],
        "previous at version 1": head[:49] + b"\x01" * 32 + head[81:],
        "no envelopes": head[:93] + b"\x00" + head[94 + ENVELOPE_BYTES :],
        "duplicate envelopes": head[:93] + b"\x02" + head[94:-4] + head[94:-4] + head[-4:],
        "bad envelope version": head[:94] + b"\x07" + head[95:],
        "short body length": head[:-4] + (len(good) + 15).to_bytes(4, "big"),
    }
    for what, header in bad_headers.items():
        with pytest.raises(UsageError):
            decode_manifest(craft(good, header=header))
        assert what


@pytest.mark.parametrize(
    "plaintext",
    [
        b"",
        b"\x02" + bytes(10),  # unknown layout
        b"\x00" + (5).to_bytes(8, "big") + b"abc" + b"\x00\x00",  # inline shorter than size
        b"\x00" + (4097).to_bytes(8, "big") + bytes(4097) + b"\x00\x00",  # inline too big
        b"\x00" + (0).to_bytes(8, "big") + b"\x00\x00\x00",  # trailing byte
        b"\x00" + (0).to_bytes(8, "big") + b"\x01\xff\x00",  # name not UTF-8
        b"\x00" + (0).to_bytes(8, "big") + b"\x01\x07\x00",  # control character in the name
        b"\x00" + (0).to_bytes(8, "big") + b"\x00\x01\xe9",  # media type not ASCII
    ],
)
def test_decode_body_rejects(plaintext: bytes) -> None:
    with pytest.raises(UsageError, match=r"malformed manifest body|must|name"):
        decode_body(plaintext)
    if plaintext:
        m = decode_manifest(craft(plaintext))  # signed, decrypts, but the body is refused
        with pytest.raises(UsageError):
            open_manifest(m, FILE_KEY)


def test_decode_body_rejects_bad_layouts() -> None:
    good = encode_body(spread())
    assert decode_body(good) == spread()
    offsets = {  # byte offset in the body -> a value that is out of range there
        41: (3 * 2**15).to_bytes(4, "big"),  # block bytes not a power of two
        42: (2**9).to_bytes(3, "big"),  # block bytes below one leaf
        41 + 0: (2**25).to_bytes(4, "big"),  # block bytes 32 MiB
        45: b"\x03",  # k = n
        46: b"\x41",  # n > 64
        47: b"\x02",  # cipher suite
        48: b"\x02",  # erasure suite
        49: b"\x01",  # Merkle suite 1 (1 KiB leaves): retired
        50 + 20: bytes(32),  # lease id 0
    }
    for offset, value in offsets.items():
        bad = good[:offset] + value + good[offset + len(value) :]
        with pytest.raises(UsageError, match="malformed manifest body"):
            decode_body(bad)
    with pytest.raises(UsageError, match="truncated"):
        decode_body(good[:30])
    one_share = good[:45] + b"\x01\x01" + good[47 : 50 + 84] + good[-2:]
    with pytest.raises(UsageError, match="malformed manifest body: share count"):
        decode_body(one_share)


def test_layout_arithmetic_matches_the_erasure_module() -> None:
    erasure = pytest.importorskip("nuclux.core.erasure")
    for k, n, block in ((1, 2, 1024), (2, 3, 2**20), (4, 8, 2**18), (10, 16, 2**16)):
        theirs = erasure.Layout(k, n, block)
        ours = Layout(
            DATA_ID, block, k, (Share(to_address(b"\x01" * 20), LeaseId(1), bytes(32)),) * n
        )
        assert ours.segment_bytes == theirs.segment_bytes
        seg = ours.segment_bytes
        for size in (0, 1, seg - 1, seg, seg + 1, 10**9):
            assert ours.segment_count(size) == theirs.segment_count(size)
            assert ours.share_size(size) == theirs.share_size(size)


# -- values and bounds ----------------------------------------------------------------------------


shares_st = st.builds(
    Share,
    st.binary(min_size=20, max_size=20).map(to_address),
    st.integers(1, 2**256 - 1).map(LeaseId),
    st.binary(min_size=32, max_size=32),
)


@settings(max_examples=50)
@given(
    size=st.integers(0, 2**40),
    block_log=st.integers(10, 20),
    shares=st.lists(shares_st, min_size=2, max_size=12),
    data=st.data(),
    name=st.text(max_size=60).filter(lambda s: all(c.isprintable() for c in s)),
    version=st.integers(1, 2**32 - 1),
    created_at=st.integers(0, 2**64 - 1),
)
def test_round_trip_spread(
    size: int,
    block_log: int,
    shares: list[Share],
    data: st.DataObject,
    name: str,
    version: int,
    created_at: int,
) -> None:
    k = data.draw(st.integers(1, len(shares) - 1))
    body = spread_body(
        size, data_id=DATA_ID, block_bytes=2**block_log, k=k, shares=shares, name=name
    )
    assert decode_body(encode_body(body)) == body
    previous = NO_PREVIOUS if version == 1 else b"\x09" * 32
    m = seal(body, version=version, created_at=created_at, previous=previous)
    again = decode_manifest(m.encode())
    assert again == m
    assert open_manifest(again, FILE_KEY) == body


@given(
    data=st.binary(max_size=INLINE_MAX_BYTES),
    media=st.text(
        st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=MAX_MEDIA_TYPE_BYTES
    ),
)
def test_round_trip_inline(data: bytes, media: str) -> None:
    body = inline_body(data, media_type=media)
    assert decode_body(encode_body(body)) == body


def test_largest_manifest_fits_the_bound() -> None:
    share = Share(to_address(b"\x01" * 20), LeaseId(2**256 - 1), b"\x02" * 32)
    body = spread_body(
        2**32 * (2**26 - 16),  # the largest file: 2**32 full segments of 64 MiB
        data_id=DATA_ID,
        block_bytes=2**22,
        k=16,
        shares=[share] * MAX_SHARES,
        name="é" * (MAX_NAME_BYTES // 2) + "x",
        media_type="m" * MAX_MEDIA_TYPE_BYTES,
    )
    envelopes = [owner_envelope(ephemeral=bytes([i + 1]) * 32) for i in range(MAX_ENVELOPES)]
    m = seal(body, envelopes=envelopes, version=2**32 - 1, previous=b"\xff" * 32)
    assert len(m.encode()) == MAX_MANIFEST_BYTES == 7285
    assert decode_manifest(m.encode()) == m
    packed = seal(
        inline_body(bytes(INLINE_MAX_BYTES), name="n" * MAX_NAME_BYTES), envelopes=envelopes
    )
    assert len(packed.encode()) < MAX_MANIFEST_BYTES
    assert open_manifest(decode_manifest(packed.encode()), FILE_KEY).inline == bytes(
        INLINE_MAX_BYTES
    )


def test_bad_values_are_usage_errors() -> None:
    one = Share(to_address(b"\x01" * 20), LeaseId(1), b"\x00" * 32)
    bad_bodies: list[dict[str, Any]] = [
        {"k": 0},
        {"k": 3},  # k = n
        {"n": 1, "k": 1},
        {"block_bytes": 512},
        {"block_bytes": 3 * 1024},
        {"block_bytes": 32 * 2**20},
        {"block_bytes": 2**22, "k": 17, "n": 20},  # segment over 64 MiB
        {"data_id": b"short"},
        {"shares": []},
        {"shares": [one] * (MAX_SHARES + 1)},
        {"shares": [one, dataclasses.replace(one, lease_id=LeaseId(0))]},
        {"shares": [one, dataclasses.replace(one, root=b"\x00" * 31)]},
        {"name": "x" * (MAX_NAME_BYTES + 1)},
        {"name": "a\nb"},
        {"name": "\ud800"},
        {"media_type": "vidéo/mp4"},
        {"media_type": "m" * (MAX_MEDIA_TYPE_BYTES + 1)},
    ]
    for changes in bad_bodies:
        with pytest.raises(UsageError):
            spread(**changes)
    with pytest.raises(UsageError):
        spread(size=-1)
    with pytest.raises(UsageError, match="segments: use larger blocks"):
        spread(size=2**63, block_bytes=1024, k=1)
    with pytest.raises(UsageError):
        inline_body(bytes(INLINE_MAX_BYTES + 1))
    layout = spread().layout
    assert isinstance(layout, Layout)
    for body in (
        ManifestBody(1),
        ManifestBody(1, inline=b"x", layout=layout),
        ManifestBody(2, inline=b"x"),
        ManifestBody(10_000_000, layout=dataclasses.replace(layout, merkle=0)),
        ManifestBody(10_000_000, layout=dataclasses.replace(layout, cipher=2)),
    ):
        with pytest.raises(UsageError):
            encode_body(body)
    bad_manifests: list[dict[str, Any]] = [
        {"file_id": b"short"},
        {"version": 0},
        {"version": 2**32},
        {"version": 2},  # needs a previous digest
        {"previous": b"\x01" * 32},  # version 1 has none
        {"previous": b"\x01"},
        {"created_at": -1},
        {"envelopes": []},
        {"envelopes": [owner_envelope()] * 2},
        {"envelopes": [owner_envelope(ephemeral=bytes([i + 1]) * 32) for i in range(17)]},
        {"envelopes": [b"\x01" * 80]},
        {"file_key": b"short"},
        {"body_nonce": b"short"},
        {"key": b"\x00" * 32},
    ]
    for changes in bad_manifests:
        with pytest.raises(UsageError):
            seal(**changes)
