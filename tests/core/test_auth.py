"""Request signing: golden vectors, round trips, tampering, freshness, replays, header fuzzing."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib

import pytest
from eth_keys.datatypes import Signature
from hypothesis import given
from hypothesis import strategies as st

from nuclux.core.auth import (
    EMPTY_SHA256,
    MAX_PATH_BYTES,
    ReplayGuard,
    RequestAuth,
    RequestFields,
    RequestVerifier,
    b64url_decode,
    b64url_encode,
    decode_authorization,
    decode_content_sha256,
    encode_authorization,
    encode_content_sha256,
    request_message,
    sign_message,
    sign_request,
    signer_of,
    to_address,
    verify_request,
)
from nuclux.errors import ReplayedRequest, StaleRequest, Unauthenticated, UsageError

KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
KEY_ADDRESS = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
OTHER_KEY = hashlib.sha256(b"nuclux-test/mallory").digest()
FINGERPRINT = bytes(range(32))
FIELDS = RequestFields("PUT", "/v1/leases/7/objects/00ff?x=1", hashlib.sha256(b"hello").digest())
TS = 1_700_000_000
NONCE = bytes(range(16))
WINDOW = 120

GOLDEN_MESSAGE = (
    "00116e75636c75782f726571756573742f7631"  # lp(b"nuclux/request/v1")
    "0003505554"  # lp(b"PUT")
    "001d2f76312f6c65617365732f372f6f626a656374732f303066663f783d31"  # lp(path)
    "00202cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"  # lp(sha256)
    "0020000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"  # lp(fingerprint)
    "0008000000006553f100"  # lp(timestamp u64)
    "0010000102030405060708090a0b0c0d0e0f"  # lp(nonce)
)
GOLDEN_SIGNATURE = (
    "22e8721e797e8eed3b940267f8e2e236338573235b0828c4033350a2f273311e"
    "50a2ea49b61d84b29b983048dbcbe97241b8301c34f1da60846836337b072fdf01"
)
GOLDEN_HEADER = (
    "Nuclux v1 LHU242BdnBano9exiY5Sk5amXCMAAAAAZVPxAAABAgMEBQYHCAkKCwwNDg8i6HIeeX6O7TuUAmf4"
    "4uI2M4VzI1sIKMQDM1Ci8nMxHlCi6km2HYSym5gwSNvL6XJBuDAcNPHaYIRoNjN7By_fAQ"
)


def signed(**changes: object) -> RequestAuth:
    args: dict[str, object] = {"fingerprint": FINGERPRINT, "timestamp": TS, "nonce": NONCE}
    args.update(changes)
    return sign_request(KEY, FIELDS, **args)  # type: ignore[arg-type]


def verify(auth: RequestAuth, fields: RequestFields = FIELDS, **changes: object) -> str:
    args: dict[str, object] = {"fingerprint": FINGERPRINT, "now": TS, "window": WINDOW}
    args.update(changes)
    return verify_request(auth, fields, **args)  # type: ignore[arg-type]


def test_golden_vector() -> None:
    message = request_message(FIELDS, fingerprint=FINGERPRINT, timestamp=TS, nonce=NONCE)
    assert message.hex() == GOLDEN_MESSAGE
    auth = signed()
    assert auth.signature.hex() == GOLDEN_SIGNATURE
    assert auth.address == KEY_ADDRESS
    assert encode_authorization(auth) == GOLDEN_HEADER
    assert decode_authorization(GOLDEN_HEADER) == auth
    assert verify(auth) == KEY_ADDRESS


def test_golden_signature_checks_with_an_independent_library() -> None:
    sig = bytes.fromhex(GOLDEN_SIGNATURE)
    digest = hashlib.sha256(bytes.fromhex(GOLDEN_MESSAGE)).digest()
    public = Signature(sig).recover_public_key_from_msg_hash(digest)
    assert public.to_checksum_address() == KEY_ADDRESS


@given(
    method=st.sampled_from(["GET", "HEAD", "PUT", "POST", "DELETE"]),
    path=st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=200),
    body=st.binary(max_size=64),
    fingerprint=st.binary(min_size=32, max_size=32),
    timestamp=st.integers(0, 2**64 - 1),
    nonce=st.binary(min_size=16, max_size=16),
)
def test_round_trip(
    method: str, path: str, body: bytes, fingerprint: bytes, timestamp: int, nonce: bytes
) -> None:
    fields = RequestFields(method, "/" + path, hashlib.sha256(body).digest())
    auth = sign_request(KEY, fields, fingerprint=fingerprint, timestamp=timestamp, nonce=nonce)
    decoded = decode_authorization(encode_authorization(auth))
    assert decoded == auth
    got = verify_request(decoded, fields, fingerprint=fingerprint, now=timestamp, window=0)
    assert got == KEY_ADDRESS


@pytest.mark.parametrize(
    "fields",
    [
        dataclasses.replace(FIELDS, method="POST"),
        dataclasses.replace(FIELDS, path="/v1/leases/8/objects/00ff?x=1"),
        dataclasses.replace(FIELDS, path="/v1/leases/7/objects/00ff?x=2"),
        dataclasses.replace(FIELDS, content_sha256=EMPTY_SHA256),
    ],
)
def test_tampered_request_fails(fields: RequestFields) -> None:
    with pytest.raises(Unauthenticated, match="signature is not by"):
        verify(signed(), fields)


def test_tampered_auth_fails() -> None:
    auth = signed()
    for tampered in (
        dataclasses.replace(auth, timestamp=TS + 1),
        dataclasses.replace(auth, nonce=bytes(16)),
        dataclasses.replace(auth, signer=bytes(20)),
        dataclasses.replace(auth, signature=auth.signature[:10] + b"\x00" + auth.signature[11:]),
    ):
        with pytest.raises(Unauthenticated):
            verify(tampered)
    other = sign_request(OTHER_KEY, FIELDS, fingerprint=FINGERPRINT, timestamp=TS, nonce=NONCE)
    with pytest.raises(Unauthenticated, match=KEY_ADDRESS):
        verify(dataclasses.replace(other, signer=auth.signer))


@given(position=st.integers(0, 108), bit=st.integers(0, 7))
def test_any_flipped_header_bit_fails(position: int, bit: int) -> None:
    raw = bytearray(b64url_decode(GOLDEN_HEADER[10:], max_chars=200, what="token"))
    raw[position] ^= 1 << bit
    with pytest.raises(Unauthenticated):
        verify(decode_authorization("Nuclux v1 " + b64url_encode(bytes(raw))))


def test_wrong_fingerprint_fails() -> None:
    with pytest.raises(Unauthenticated):
        verify(signed(), fingerprint=bytes(32))


def test_high_s_signature_is_refused() -> None:
    auth = signed()
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    s = int.from_bytes(auth.signature[32:64], "big")
    flipped = auth.signature[:32] + (n - s).to_bytes(32, "big") + bytes([auth.signature[64] ^ 1])
    with pytest.raises(Unauthenticated, match="non-canonical"):
        verify(dataclasses.replace(auth, signature=flipped))


@pytest.mark.parametrize("now", [TS - WINDOW - 1, TS + WINDOW + 1, 0, 2**64])
def test_stale_or_future_timestamp_fails(now: int) -> None:
    with pytest.raises(StaleRequest, match="clock"):
        verify(signed(), now=now)


@pytest.mark.parametrize("now", [TS - WINDOW, TS + WINDOW])
def test_window_edges_are_accepted(now: int) -> None:
    assert verify(signed(), now=now) == KEY_ADDRESS


def test_verifier_refuses_replays() -> None:
    verifier = RequestVerifier(FINGERPRINT, ReplayGuard(WINDOW, 100))
    auth = signed()
    assert verifier.verify(auth, FIELDS, now=TS) == KEY_ADDRESS
    with pytest.raises(ReplayedRequest):
        verifier.verify(auth, FIELDS, now=TS + 1)
    later = TS + WINDOW + 1
    with pytest.raises(StaleRequest):  # after the window the timestamp alone refuses it
        verifier.verify(auth, FIELDS, now=later)
    assert verifier.verify(signed(timestamp=later), FIELDS, now=later) == KEY_ADDRESS
    assert len(verifier.guard) == 1  # the first entry was pruned
    with pytest.raises(Unauthenticated):  # a bad signature never reaches the guard
        verifier.verify(signed(nonce=bytes(16)), dataclasses.replace(FIELDS, method="GET"), now=TS)
    assert len(verifier.guard) == 1


def test_same_nonce_from_two_signers_is_not_a_replay() -> None:
    guard = ReplayGuard(WINDOW, 10)
    guard.admit(b"a" * 20, NONCE, TS, now=TS)
    guard.admit(b"b" * 20, NONCE, TS, now=TS)
    with pytest.raises(ReplayedRequest):
        guard.admit(b"a" * 20, NONCE, TS - 5, now=TS)


def test_guard_memory_stays_bounded() -> None:
    window, rate = 60, 500
    guard = ReplayGuard(window, max_entries=40_000)
    now, most = TS, 0
    for i in range(100_000):  # 500 requests a second for 200 s, each kept for ~61 s
        if i % rate == 0:
            now += 1
        guard.admit(b"s" * 20, i.to_bytes(16, "big"), now, now=now)
        most = max(most, len(guard))
    assert most <= rate * (window + 1)
    # a burst beyond the limit is refused (not silently forgotten) until entries expire
    full = ReplayGuard(window, 1000)
    for i in range(1000):
        full.admit(b"s" * 20, i.to_bytes(16, "big"), TS, now=TS)
    with pytest.raises(Unauthenticated, match=r"server busy.*retry in 61 s"):
        full.admit(b"s" * 20, b"x" * 16, TS, now=TS)
    full.admit(b"s" * 20, b"x" * 16, TS + window + 1, now=TS + window + 1)
    assert len(full) == 1
    assert "1/1000" in repr(full)


@given(st.text(max_size=600))
def test_header_decoder_fuzz_text(value: str) -> None:
    for candidate in (value, "Nuclux v1 " + value):
        with contextlib.suppress(Unauthenticated):
            decode_authorization(candidate)


@given(st.binary(max_size=200))
def test_header_decoder_fuzz_tokens(raw: bytes) -> None:
    try:
        auth = decode_authorization("Nuclux v1 " + b64url_encode(raw))
    except Unauthenticated:
        return
    with pytest.raises(Unauthenticated):
        verify(auth, now=auth.timestamp)


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "Bearer abc",
        "nuclux v1 " + GOLDEN_HEADER[10:],
        "Nuclux v2 " + GOLDEN_HEADER[10:],
        GOLDEN_HEADER + "A",
        GOLDEN_HEADER[:-1],
        GOLDEN_HEADER[:-1] + "B",  # non-canonical trailing bits
        GOLDEN_HEADER + "==",
        GOLDEN_HEADER.replace("_", "/"),
        GOLDEN_HEADER + " " * 600,
        GOLDEN_HEADER[:-2] + "BA",  # recovery id 4
    ],
)
def test_header_decoder_rejects(value: str | None) -> None:
    with pytest.raises(Unauthenticated):
        decode_authorization(value)


def test_content_sha256_header() -> None:
    digest = hashlib.sha256(b"body").digest()
    assert decode_content_sha256(encode_content_sha256(digest)) == digest
    assert decode_content_sha256(digest.hex().upper()) == digest
    assert decode_content_sha256(None) == EMPTY_SHA256
    for bad in ("", "00", digest.hex() + "0", "g" * 64, digest.hex()[:-1] + " "):
        with pytest.raises(Unauthenticated):
            decode_content_sha256(bad)


def test_fields_bounds() -> None:
    assert RequestFields("GET", "/" + "a" * (MAX_PATH_BYTES - 1)).content_sha256 == EMPTY_SHA256
    for method, path in [
        ("PATCH", "/"),
        ("get", "/"),
        ("GET", ""),
        ("GET", "relative"),
        ("GET", "/a b"),
        ("GET", "/é"),
        ("GET", "/\ud800"),
        ("GET", "/" + "a" * MAX_PATH_BYTES),
    ]:
        with pytest.raises(UsageError):
            RequestFields(method, path)
        with pytest.raises(Unauthenticated):
            RequestFields.from_http(method, path, None)
    with pytest.raises(UsageError):
        RequestFields("GET", "/", b"short")
    with pytest.raises(Unauthenticated):
        RequestFields.from_http("PUT", "/", "zz")


def test_signing_input_bounds() -> None:
    with pytest.raises(UsageError):
        signed(fingerprint=b"short")
    with pytest.raises(UsageError):
        signed(nonce=b"short")
    with pytest.raises(UsageError):
        signed(timestamp=-1)
    with pytest.raises(UsageError):
        sign_request(b"\x00" * 32, FIELDS, fingerprint=FINGERPRINT, timestamp=TS, nonce=NONCE)
    with pytest.raises(UsageError):
        ReplayGuard(0, 10)
    with pytest.raises(UsageError):
        RequestVerifier(b"short", ReplayGuard())


def test_to_address_is_eip55() -> None:
    assert to_address(bytes.fromhex(KEY_ADDRESS[2:].lower())) == KEY_ADDRESS


@given(method=st.text(max_size=8), path=st.text(max_size=1100), digest=st.none() | st.text())
def test_fields_from_http_fuzz(method: str, path: str, digest: str | None) -> None:
    try:
        fields = RequestFields.from_http(method, path, digest)
    except Unauthenticated:
        return
    if fields != FIELDS:
        with pytest.raises(Unauthenticated):
            verify(signed(), fields)


def test_keys_are_built_once_and_bad_keys_refused() -> None:
    assert to_address(signer_of(KEY)) == KEY_ADDRESS
    assert to_address(signer_of(KEY)) == KEY_ADDRESS  # from the cache, the same
    assert signer_of(OTHER_KEY) != signer_of(KEY)
    for bad in (b"", b"\x00" * 32, b"\xff" * 32, KEY[:31], bytearray(KEY), KEY.hex()):
        with pytest.raises(UsageError, match="invalid private key"):
            signer_of(bad)  # type: ignore[arg-type]
        with pytest.raises(UsageError, match="invalid private key"):
            sign_message(bad, b"m")  # type: ignore[arg-type]
