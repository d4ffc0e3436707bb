"""Read capabilities: golden vectors, round trips, expiry, grantee, lease and coverage checks."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nuclux.core.auth import b64url_encode
from nuclux.core.capability import (
    MAX_CAPABILITY_BYTES,
    MAX_CAPABILITY_CHARS,
    MAX_OBJECTS,
    Capability,
    capability_from_header,
    capability_to_header,
    decode_capability,
    encode_capability,
    issue_capability,
    verify_capability,
)
from nuclux.core.types import Address, LeaseId
from nuclux.errors import Forbidden, Unauthenticated, UsageError

OWNER_KEY = bytes.fromhex("4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318")
OWNER = "0x2c7536E3605D9C16a7a3D7b1898e529396a65c23"
GRANTEE = "0x" + "22" * 20
STRANGER = "0x" + "33" * 20
OTHER_KEY = hashlib.sha256(b"nuclux-test/mallory").digest()
EXPIRES = 1_700_003_600
NONCE = bytes(range(16))

GOLDEN_OBJECTS = (
    "01"  # version
    "0000000000000000000000000000000000000000000000000000000000000007"  # lease id
    "2c7536e3605d9c16a7a3d7b1898e529396a65c23"  # owner
    "2222222222222222222222222222222222222222"  # grantee
    "000000006553ff10"  # expires_at
    "000102030405060708090a0b0c0d0e0f"  # nonce
    "00"
    "0002"
    "0200ff"
    "0161"  # scope: 2 objects, 00ff and "a" (sorted)
    "83962ed3fc2f13237468ccb60e8057dae709395acee3a03a3a4b5dfc67f70ff3"
    "5d825bd932f2b04e9f631262d7a9516e192f0f214ffdd4b5dfbdce761e7b734500"  # signature
)
SCOPE = "0000020200ff0161"
GOLDEN_PREFIX = (
    "01"
    "8000000000000000000000000000000000000000000000000000000000000001"
    "2c7536e3605d9c16a7a3d7b1898e529396a65c23"
    "2222222222222222222222222222222222222222"
    "000000006553ff10"
    "00000000000000000000000000000000"
    "01"
    "07"
    "70686f746f732f"  # scope: prefix "photos/"
    "adc061aa01d55070c8bbb37069d90e1eba9463f9eb29a346157a41680ad5f0fd"
    "3dd19a116c40643cac0052b778f410123b7032f74e38c381375f810728fa204c01"
)


def issue(**changes: object) -> Capability:
    args: dict[str, object] = {
        "lease_id": 7,
        "grantee": GRANTEE,
        "expires_at": EXPIRES,
        "nonce": NONCE,
        "objects": [b"a", b"\x00\xff"],
    }
    args.update(changes)
    return issue_capability(OWNER_KEY, **args)  # type: ignore[arg-type]


def check(cap: Capability, **changes: object) -> None:
    args: dict[str, object] = {
        "now": EXPIRES - 1,
        "grantee": GRANTEE,
        "lease_id": 7,
        "lease_owner": OWNER,
        "object_id": b"a",
    }
    args.update(changes)
    verify_capability(cap, **args)  # type: ignore[arg-type]


def test_golden_vectors() -> None:
    cap = issue()
    assert encode_capability(cap).hex() == GOLDEN_OBJECTS
    assert cap.owner == OWNER
    assert cap.objects == (b"\x00\xff", b"a")
    prefix = issue(lease_id=2**255 + 1, nonce=bytes(16), objects=(), prefix=b"photos/")
    assert encode_capability(prefix).hex() == GOLDEN_PREFIX
    assert decode_capability(bytes.fromhex(GOLDEN_PREFIX)) == prefix
    check(prefix, lease_id=2**255 + 1, object_id=b"photos/cat.jpg")


def test_header_round_trip() -> None:
    cap = issue()
    text = capability_to_header(cap)
    assert text == b64url_encode(bytes.fromhex(GOLDEN_OBJECTS))
    assert capability_from_header(text) == cap
    check(capability_from_header(text))


@given(
    lease_id=st.integers(1, 2**256 - 1),
    objects=st.lists(st.binary(min_size=1, max_size=64), min_size=1, max_size=20),
    expires_at=st.integers(0, 2**64 - 1),
    nonce=st.binary(min_size=16, max_size=16),
)
def test_round_trip(lease_id: int, objects: list[bytes], expires_at: int, nonce: bytes) -> None:
    cap = issue(lease_id=lease_id, objects=objects, expires_at=expires_at, nonce=nonce)
    assert decode_capability(encode_capability(cap)) == cap
    for oid in objects:
        assert cap.covers(oid)
    assert not cap.covers(b"\x00" * 65)
    if expires_at > 0:
        check(cap, now=expires_at - 1, lease_id=lease_id, object_id=objects[0])


def test_expiry() -> None:
    cap = issue()
    check(cap, now=EXPIRES - 1)
    for now in (EXPIRES, EXPIRES + 1):
        with pytest.raises(Forbidden, match="expired"):
            check(cap, now=now)


def test_grantee_lease_and_owner_must_match() -> None:
    cap = issue()
    check(cap, grantee=GRANTEE.upper().replace("0X", "0x"))  # any case
    with pytest.raises(Forbidden, match="granted to"):
        check(cap, grantee=STRANGER)
    with pytest.raises(Forbidden, match="lease 7, not lease 8"):
        check(cap, lease_id=8)
    with pytest.raises(Forbidden, match="owner"):
        check(cap, lease_owner=STRANGER)


def test_coverage() -> None:
    cap = issue()
    check(cap, object_id=b"\x00\xff")
    for oid in (b"b", b"\x00", b"a\x00", b""):
        assert not cap.covers(oid)
        with pytest.raises(Forbidden, match="does not cover"):
            check(cap, object_id=oid)
    everything = issue(objects=(), prefix=b"")
    assert everything.covers(b"anything")
    photos = issue(objects=(), prefix=b"photos/")
    assert photos.covers(b"photos/x")
    assert not photos.covers(b"photo")


def test_forged_or_tampered_capability_is_unauthenticated() -> None:
    cap = issue()
    forged = issue_capability(
        OTHER_KEY, lease_id=7, grantee=GRANTEE, expires_at=EXPIRES, nonce=NONCE, objects=[b"a"]
    )
    with pytest.raises(Unauthenticated, match="not by its owner"):
        check(dataclasses.replace(forged, owner=Address(OWNER)))
    for tampered in (
        dataclasses.replace(cap, expires_at=EXPIRES + 1),
        dataclasses.replace(cap, grantee=Address(STRANGER)),
        dataclasses.replace(cap, objects=(b"\x00\xff", b"a", b"b")),
        dataclasses.replace(cap, lease_id=LeaseId(8)),
        dataclasses.replace(cap, nonce=bytes(16)),
    ):
        with pytest.raises(Unauthenticated):
            check(tampered, grantee=tampered.grantee, lease_id=tampered.lease_id)


@given(position=st.integers(0, len(GOLDEN_OBJECTS) // 2 - 1), bit=st.integers(0, 7))
def test_any_flipped_bit_is_refused(position: int, bit: int) -> None:
    data = bytearray(bytes.fromhex(GOLDEN_OBJECTS))
    data[position] ^= 1 << bit
    with pytest.raises((Unauthenticated, Forbidden)):
        check(decode_capability(bytes(data)))


@given(st.binary(max_size=400))
def test_decoder_fuzz(data: bytes) -> None:
    with contextlib.suppress(Unauthenticated):
        decode_capability(data)
    with contextlib.suppress(Unauthenticated):
        decode_capability(bytes.fromhex(GOLDEN_OBJECTS)[:110] + data)
    with contextlib.suppress(Unauthenticated):
        capability_from_header(data.decode("latin-1"))


@pytest.mark.parametrize(
    "data",
    [
        "",
        "02" + GOLDEN_OBJECTS[2:],  # unknown version
        GOLDEN_OBJECTS[:-2],  # short signature
        GOLDEN_OBJECTS + "00",  # trailing byte
        GOLDEN_OBJECTS.replace(SCOPE, "00000201610200ff"),  # unsorted
        GOLDEN_OBJECTS.replace(SCOPE, "00000201610161"),  # duplicate
        GOLDEN_OBJECTS.replace(SCOPE, "000000"),  # empty list
        GOLDEN_OBJECTS.replace(SCOPE, "00000100"),  # empty id
        GOLDEN_OBJECTS.replace(SCOPE, "0000020200ff0261"),  # id runs into signature
        GOLDEN_OBJECTS.replace(SCOPE, "0200"),  # unknown scope
        GOLDEN_OBJECTS.replace(SCOPE, "0141" + "61" * 65),  # prefix too long
        "01" + "00" * 32 + GOLDEN_OBJECTS[66:],  # lease id 0
    ],
)
def test_decoder_rejects(data: str) -> None:
    assert data != GOLDEN_OBJECTS
    with pytest.raises(Unauthenticated):
        decode_capability(bytes.fromhex(data))


def test_bounds() -> None:
    big = issue(objects=[i.to_bytes(64, "big") for i in range(MAX_OBJECTS)])
    encoded = encode_capability(big)
    assert len(encoded) == MAX_CAPABILITY_BYTES
    assert len(capability_to_header(big)) == MAX_CAPABILITY_CHARS
    assert capability_from_header(capability_to_header(big)) == big
    with pytest.raises(UsageError):
        issue(objects=[i.to_bytes(2, "big") for i in range(MAX_OBJECTS + 1)])
    with pytest.raises(Unauthenticated):
        capability_from_header("A" * (MAX_CAPABILITY_CHARS + 1))
    with pytest.raises(Unauthenticated):
        capability_from_header(None)
    bads: list[dict[str, object]] = [
        {"objects": [b""]},
        {"objects": [b"x" * 65]},
        {"objects": []},
        {"objects": [b"a"], "prefix": b"a"},
        {"objects": [], "prefix": b"x" * 65},
        {"lease_id": 0},
        {"lease_id": 2**256},
        {"expires_at": -1},
        {"nonce": b"short"},
        {"grantee": "alice"},
    ]
    for bad in bads:
        with pytest.raises(UsageError):
            issue(**bad)
