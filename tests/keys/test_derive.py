"""BIP-39 / BIP-44 derivation and the X25519-from-Ethereum key derivation."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from eth_account import Account
from eth_account.hdaccount import key_from_seed, seed_from_mnemonic
from hypothesis import given, settings
from hypothesis import strategies as st

from nuclux.errors import UsageError
from nuclux.keys import (
    AccountKeys,
    from_mnemonic,
    from_private_key,
    generate_mnemonic,
    parse_private_key_hex,
    validate_mnemonic,
)
from nuclux.keys.derive import X25519_INFO

TEST_PHRASE = "abandon " * 11 + "about"
# Golden vectors: the BIP-39 test phrase at m/44'/60'/0'/0/{0,1} (as MetaMask, Ledger, ...).
GOLDEN_ADDRESS_0 = "0x9858EfFD232B4033E47d90003D41EC34EcaEda94"
GOLDEN_ADDRESS_1 = "0x6Fac4D18c912343BF86fa7049364Dd4E424Ab9C0"
GOLDEN_ETH_KEY_0 = "1ab42cc412b618bdea3a599e3c9bae199ebf030895b039e9db1e30dafb12b727"
# Frozen here: changing the X25519 derivation must change X25519_INFO, not these bytes.
GOLDEN_X25519_PUBLIC_0 = "6b14c5b2f7e7e54c5af36cb3615c87a0760a7f8534d57815f4124f47a50a1d6c"


def _hkdf_sha256(ikm: bytes, info: bytes) -> bytes:
    """RFC 5869 with an empty salt and one output block, written out independently."""
    prk = hmac.new(b"\x00" * 32, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


def test_golden_vector() -> None:
    keys = from_mnemonic(TEST_PHRASE)
    assert keys.address == GOLDEN_ADDRESS_0
    assert keys.eth_private_key.hex() == GOLDEN_ETH_KEY_0
    assert keys.x25519_public.hex() == GOLDEN_X25519_PUBLIC_0
    assert from_mnemonic(TEST_PHRASE, index=1).address == GOLDEN_ADDRESS_1


def test_matches_eth_account_hd_derivation() -> None:
    seed = seed_from_mnemonic(TEST_PHRASE, "")
    assert from_mnemonic(TEST_PHRASE).eth_private_key == key_from_seed(seed, "m/44'/60'/0'/0/0")


def test_x25519_is_hkdf_of_eth_key() -> None:
    keys = from_mnemonic(TEST_PHRASE)
    assert keys.x25519_private == _hkdf_sha256(keys.eth_private_key, X25519_INFO)
    public = X25519PrivateKey.from_private_bytes(keys.x25519_private).public_key()
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert keys.x25519_public == raw
    assert keys.x25519_private_key().public_key().public_bytes_raw() == raw


def test_bip39_passphrase_changes_the_account() -> None:
    assert from_mnemonic(TEST_PHRASE, passphrase="x").address != GOLDEN_ADDRESS_0


@settings(max_examples=20, deadline=None)
@given(entropy=st.binary(min_size=32, max_size=32), index=st.integers(0, 2**31 - 1))
def test_round_trip_is_deterministic(entropy: bytes, index: int) -> None:
    phrase = generate_mnemonic(entropy)
    assert len(phrase.split()) == 24
    assert validate_mnemonic(phrase) == phrase
    assert from_mnemonic(phrase, index) == from_mnemonic(phrase, index)


@settings(max_examples=20, deadline=None)
@given(entropy=st.binary(min_size=16, max_size=16))
def test_different_index_gives_different_keys(entropy: bytes) -> None:
    phrase = generate_mnemonic(entropy)
    first, second = from_mnemonic(phrase, 0), from_mnemonic(phrase, 1)
    assert first.address != second.address
    assert first.x25519_public != second.x25519_public


@given(
    upper=st.lists(st.booleans(), min_size=12, max_size=12),
    sep=st.sampled_from([" ", "\t", "\n  "]),
)
def test_validate_normalises_case_and_whitespace(upper: list[bool], sep: str) -> None:
    words = [w.upper() if u else w for w, u in zip(TEST_PHRASE.split(), upper, strict=True)]
    assert validate_mnemonic("  " + sep.join(words) + "\n") == TEST_PHRASE


@pytest.mark.parametrize(
    ("phrase", "fragment"),
    [
        ("abandon " * 11 + "abandon", "checksum"),
        ("abandon " * 11 + "abot", "word 12"),
        ("abandon " * 10 + "about", "has 11"),
        ("", "has 0"),
    ],
)
def test_bad_phrases_raise_usage_error(phrase: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment):
        validate_mnemonic(phrase)
    with pytest.raises(UsageError):
        from_mnemonic(phrase)


def test_bad_word_error_does_not_echo_the_phrase() -> None:
    with pytest.raises(UsageError) as info:
        validate_mnemonic("zebra " * 11 + "zzzzz")
    assert "zebra" not in str(info.value)


def test_repr_shows_no_secret() -> None:
    keys = from_mnemonic(TEST_PHRASE)
    for text in (repr(keys), str(keys)):
        assert keys.eth_private_key.hex() not in text
        assert keys.x25519_private.hex() not in text
        assert keys.address in text


def test_from_private_key_matches_eth_account() -> None:
    key = bytes.fromhex(GOLDEN_ETH_KEY_0)
    assert from_private_key(key).address == Account.from_key(key).address == GOLDEN_ADDRESS_0
    assert from_private_key(key) == from_mnemonic(TEST_PHRASE)


@pytest.mark.parametrize("key", [b"\x00" * 32, b"\xff" * 32, b"\x01" * 31])
def test_invalid_private_keys(key: bytes) -> None:
    with pytest.raises(UsageError):
        from_private_key(key)


def test_parse_private_key_hex() -> None:
    assert parse_private_key_hex("0x" + GOLDEN_ETH_KEY_0) == bytes.fromhex(GOLDEN_ETH_KEY_0)
    assert parse_private_key_hex(GOLDEN_ETH_KEY_0 + "\n") == bytes.fromhex(GOLDEN_ETH_KEY_0)
    with pytest.raises(UsageError):
        parse_private_key_hex("0x1234")


def test_entropy_and_index_are_checked() -> None:
    assert len(generate_mnemonic(b"\x00" * 16).split()) == 12
    with pytest.raises(UsageError):
        generate_mnemonic(b"\x00" * 17)
    with pytest.raises(UsageError):
        from_mnemonic(TEST_PHRASE, index=2**31)
    with pytest.raises(UsageError):
        AccountKeys(b"\x01" * 32, GOLDEN_ADDRESS_0, b"short", b"\x02" * 32)
