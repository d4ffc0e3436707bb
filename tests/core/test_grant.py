"""Grants: golden vector, what the capabilities let a node serve, wrong grantee, expiry, wrong
key, every flipped byte, forgeries, strict decoding, text form and bounds."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nuclux.core.auth import b64url_encode, sign_message, signer_of, to_address
from nuclux.core.capability import (
    capability_from_header,
    capability_to_header,
    verify_capability,
)
from nuclux.core.envelope import lp, x25519_public
from nuclux.core.grant import (
    GRANT_TAG,
    MAX_GRANT_BYTES,
    MAX_GRANT_CHARS,
    Grant,
    decode_grant,
    encode_grant,
    grant_from_text,
    grant_to_text,
    issue_grant,
    open_grant,
)
from nuclux.core.manifest import MAX_SHARES
from nuclux.core.reference import (
    Reference,
    block_object_id,
    index_object_id,
    manifest_object_id,
)
from nuclux.errors import Forbidden, IntegrityError, UsageError

VECTOR: dict[str, Any] = json.loads((Path(__file__).parent / "vectors" / "grant.json").read_text())
OWNER_KEY = bytes.fromhex(VECTOR["owner_private_key"])
OWNER = VECTOR["owner"]
FILE_ID = bytes.fromhex(VECTOR["file_id"])
GRANTEE = VECTOR["grantee"]
GRANTEE_X = bytes.fromhex(VECTOR["grantee_x25519_private"])
FILE_KEY = bytes.fromhex(VECTOR["file_key"])
EXPIRES = VECTOR["expires_at"]
LEASES = [int(x) for x in VECTOR["lease_ids"]]
ENCODED = bytes.fromhex(VECTOR["encoded"])
MALLORY_KEY = hashlib.sha256(b"nuclux-test/mallory").digest()
MALLORY = to_address(signer_of(MALLORY_KEY))
MALLORY_X = hashlib.sha256(b"nuclux-test/mallory-x25519").digest()


def issue(key: bytes = OWNER_KEY, **changes: Any) -> Grant:
    args: dict[str, Any] = {
        "file_id": FILE_ID,
        "grantee": GRANTEE,
        "grantee_x25519_public": x25519_public(GRANTEE_X),
        "file_key": FILE_KEY,
        "ephemeral_private": bytes.fromhex(VECTOR["ephemeral_private"]),
        "lease_ids": [11, 7, 2**255 + 9],
        "manifest_version": VECTOR["manifest_version"],
        "expires_at": EXPIRES,
        "nonce": bytes.fromhex(VECTOR["nonce"]),
    }
    args.update(changes)
    return issue_grant(key, **args)


def resign(unsigned: bytes, key: bytes = OWNER_KEY) -> bytes:
    return unsigned + sign_message(key, lp(GRANT_TAG) + unsigned)


def test_golden_vector() -> None:
    g = issue()
    assert encode_grant(g) == ENCODED
    assert grant_to_text(g) == VECTOR["text"]
    assert decode_grant(ENCODED) == g
    assert grant_from_text(VECTOR["text"]) == g
    assert g.reference == Reference(OWNER, FILE_ID)
    assert g.grantee == GRANTEE
    assert g.lease_ids == tuple(LEASES) == (7, 11, 2**255 + 9)
    assert [capability_to_header(c) for c in g.capabilities] == VECTOR["capability_headers"]
    assert open_grant(g, me=GRANTEE, x25519_private=GRANTEE_X, now=EXPIRES - 1) == FILE_KEY


def test_vector_follows_the_spec() -> None:
    data = ENCODED
    assert data[0] == 1
    assert to_address(data[1:21]) == OWNER
    assert data[21:37] == FILE_ID
    assert to_address(data[37:57]) == GRANTEE
    assert int.from_bytes(data[57:65], "big") == EXPIRES
    assert int.from_bytes(data[65:69], "big") == 2
    assert data[69:85].hex() == VECTOR["nonce"]
    assert data[85] == 1  # envelope version
    assert data[166] == 3  # leases
    assert int.from_bytes(data[167:199], "big") == 7
    assert len(data) == 167 + 3 * 97 + 65
    assert VECTOR["text"].startswith("nuxgrant1")


def test_capabilities_let_a_node_serve_this_file_and_nothing_more() -> None:
    g = decode_grant(ENCODED)
    other_file = bytes(16)
    for lease in LEASES:
        header = VECTOR["capability_headers"][LEASES.index(lease)]
        cap = capability_from_header(header)
        assert cap == g.capability_for(lease)
        args: dict[str, Any] = {
            "now": EXPIRES - 1,
            "grantee": GRANTEE,
            "lease_id": lease,
            "lease_owner": OWNER,
        }
        for allowed in (manifest_object_id(FILE_ID), block_object_id(FILE_ID, 0, 0)):
            verify_capability(cap, object_id=allowed, **args)
        for denied in (
            manifest_object_id(other_file),
            block_object_id(other_file, 0, 0),
            index_object_id(0),
        ):
            with pytest.raises(Forbidden, match="does not cover"):
                verify_capability(cap, object_id=denied, **args)
        with pytest.raises(Forbidden, match="granted to"):
            verify_capability(
                cap, object_id=manifest_object_id(FILE_ID), **{**args, "grantee": MALLORY}
            )
        with pytest.raises(Forbidden, match="expired"):
            verify_capability(
                cap, object_id=manifest_object_id(FILE_ID), **{**args, "now": EXPIRES}
            )
    with pytest.raises(Forbidden, match="no capability for lease 8"):
        g.capability_for(8)


def test_wrong_grantee_expiry_and_key() -> None:
    g = decode_grant(ENCODED)
    with pytest.raises(Forbidden, match="this grant is for"):
        open_grant(g, me=MALLORY, x25519_private=MALLORY_X, now=EXPIRES - 1)
    with pytest.raises(Forbidden, match="this grant is for"):
        open_grant(g, me=OWNER, x25519_private=GRANTEE_X, now=EXPIRES - 1)
    for now in (EXPIRES, EXPIRES + 1):
        with pytest.raises(Forbidden, match="expired"):
            open_grant(g, me=GRANTEE, x25519_private=GRANTEE_X, now=now)
    with pytest.raises(IntegrityError, match="another X25519 key"):
        open_grant(g, me=GRANTEE, x25519_private=MALLORY_X, now=EXPIRES - 1)
    assert open_grant(g, me=GRANTEE.lower(), x25519_private=GRANTEE_X, now=0) == FILE_KEY


def test_every_flipped_byte_is_refused() -> None:
    for position in range(len(ENCODED)):
        for mask in (0x01, 0x80):
            bad = bytearray(ENCODED)
            bad[position] ^= mask
            error = UsageError if position == 0 else IntegrityError
            with pytest.raises(error):
                decode_grant(bytes(bad))


def test_truncated_or_extended_is_refused() -> None:
    for cut in range(len(ENCODED)):
        with pytest.raises((IntegrityError, UsageError)):
            decode_grant(ENCODED[:cut])
    for extra in (b"\x00", ENCODED[-97:]):
        with pytest.raises(IntegrityError):
            decode_grant(ENCODED + extra)
    with pytest.raises(UsageError, match="malformed grant"):
        decode_grant(ENCODED + bytes(MAX_GRANT_BYTES))


def test_forgeries_are_refused() -> None:
    forged = bytearray(encode_grant(issue(key=MALLORY_KEY)))
    forged[1:21] = bytes.fromhex(OWNER[2:])
    with pytest.raises(IntegrityError, match="not signed by the file's owner"):
        decode_grant(bytes(forged))
    # The owner signs the grant, but a capability inside is mallory's: refused.
    theirs = issue(key=MALLORY_KEY)
    unsigned = bytearray(ENCODED[:-65])
    unsigned[-65:] = theirs.capabilities[-1].signature
    with pytest.raises(IntegrityError, match="capability for lease"):
        decode_grant(resign(bytes(unsigned)))
    # A capability signature that recovers no key at all.
    unsigned[-65:] = bytes(65)
    with pytest.raises(IntegrityError, match="capability for lease"):
        decode_grant(resign(bytes(unsigned)))


def test_decoding_checks_what_the_owner_signed() -> None:
    unsigned = ENCODED[:-65]
    head, leases = unsigned[:166], unsigned[167:]
    one, two, three = leases[:97], leases[97:194], leases[194:]
    bad = {
        "sorted and unique": head + b"\x03" + two + one + three,
        "sorted and unique ": head + b"\x03" + one + one + three,
        "97 trailing bytes": head + b"\x02" + one + two + three,
        "truncated": head + b"\x04" + one + two + three,
        "65 leases": head + bytes([MAX_SHARES + 1]) + one,
        "trailing bytes": head + b"\x00" + one,
        "lease id must be": head + b"\x01" + bytes(32) + one[32:],
        "manifest version must be": unsigned[:65] + bytes(4) + unsigned[69:],
    }
    for message, data in bad.items():
        with pytest.raises(UsageError, match=f"malformed grant: .*{message.strip()}"):
            decode_grant(resign(data))


def test_text_form() -> None:
    text = VECTOR["text"]
    assert grant_from_text(f"\n  {text}  \n") == decode_grant(ENCODED)
    for bad, message in (
        ("", "must start with"),
        ("nuxgrant2" + text[9:], "must start with"),
        (text[:-1], "base64url|refused"),
        (text + "=", "base64url"),
        (text[:20] + "+" + text[21:], "base64url"),
        ("nuxgrant1" + "A" * (MAX_GRANT_CHARS), "base64url"),
    ):
        with pytest.raises((UsageError, IntegrityError), match=message):
            grant_from_text(bad)
    with pytest.raises(UsageError):
        grant_from_text(None)  # type: ignore[arg-type]


@settings(max_examples=25)
@given(
    leases=st.sets(st.integers(1, 2**256 - 1), min_size=1, max_size=8),
    expires_at=st.integers(1, 2**64 - 1),
    version=st.integers(1, 2**32 - 1),
    nonce=st.binary(min_size=16, max_size=16),
)
def test_round_trip(leases: set[int], expires_at: int, version: int, nonce: bytes) -> None:
    g = issue(lease_ids=list(leases), expires_at=expires_at, manifest_version=version, nonce=nonce)
    assert g.lease_ids == tuple(sorted(leases))
    assert decode_grant(encode_grant(g)) == g
    assert grant_from_text(grant_to_text(g)) == g
    assert open_grant(g, me=GRANTEE, x25519_private=GRANTEE_X, now=expires_at - 1) == FILE_KEY


def test_bounds() -> None:
    biggest = issue(lease_ids=[2**256 - 1 - i for i in range(MAX_SHARES)], expires_at=2**64 - 1)
    assert len(encode_grant(biggest)) == MAX_GRANT_BYTES == 6440
    assert len(grant_to_text(biggest)) == MAX_GRANT_CHARS == 8596
    assert grant_from_text(grant_to_text(biggest)) == biggest
    bads: list[dict[str, Any]] = [
        {"lease_ids": []},
        {"lease_ids": list(range(1, MAX_SHARES + 2))},
        {"lease_ids": [0]},
        {"lease_ids": [2**256]},
        {"manifest_version": 0},
        {"manifest_version": 2**32},
        {"expires_at": -1},
        {"expires_at": 2**64},
        {"nonce": b"short"},
        {"grantee": "bob"},
        {"file_id": b"short"},
        {"file_key": b"short"},
        {"grantee_x25519_public": bytes(32)},  # low-order point
        {"ephemeral_private": b"short"},
    ]
    for changes in bads:
        with pytest.raises(UsageError):
            issue(**changes)
    g = issue()
    for tampered in (
        dataclasses.replace(g, capabilities=g.capabilities[::-1]),
        dataclasses.replace(
            g, capabilities=(dataclasses.replace(g.capabilities[0], grantee=MALLORY),)
        ),
        dataclasses.replace(g, envelope=b"short"),
        dataclasses.replace(
            g, capabilities=(dataclasses.replace(g.capabilities[0], signature=b"x"),)
        ),
    ):
        with pytest.raises(UsageError):
            encode_grant(tampered)
    assert b64url_encode(encode_grant(g)) == VECTOR["text"][9:]
