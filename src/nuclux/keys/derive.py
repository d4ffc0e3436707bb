"""Account keys from one BIP-39 seed phrase.

Theory of operation
-------------------
A Nuclux account is two key pairs that always travel together:

* an Ethereum (secp256k1) key that signs transactions and owns NuxCoin, and
* an X25519 key that peers use to encrypt data and session keys to the account.

Both come from one BIP-39 phrase::

    phrase --BIP-39 (PBKDF2-SHA512, optional passphrase)--> seed
    seed   --BIP-32/44 m/44'/60'/0'/0/{index}------------> Ethereum private key
    eth key --HKDF-SHA256(salt="", info=X25519_INFO)------> X25519 private key

The X25519 key is derived from the Ethereum key, not from the seed, so the keystore only has
to hold the Ethereum key, and an Ethereum key imported from another wallet (which has no
phrase) still gets an X25519 key. ``X25519_INFO`` is versioned: changing the derivation means
a new info string, never a silent change of keys.

Randomness is never hidden here: ``generate_mnemonic`` takes its entropy from the caller.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Final

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from eth_account.hdaccount import key_from_seed
from eth_keys.datatypes import PrivateKey
from mnemonic import Mnemonic

from nuclux.errors import UsageError

X25519_INFO: Final = b"nuclux/x25519-from-eth/v1"
"""HKDF info string: domain separation and version of the X25519 derivation."""

ETH_PATH_TEMPLATE: Final = "m/44'/60'/0'/0/{index}"
"""BIP-44 path of account ``index`` (coin type 60: Ethereum), as used by common wallets."""

ENTROPY_BYTES_BY_WORDS: Final = {12: 16, 15: 20, 18: 24, 21: 28, 24: 32}
"""Bytes of entropy the caller must supply for a phrase of N words."""

_SECP256K1_ORDER: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_MAX_INDEX: Final = 2**31 - 1
_HEX_KEY = re.compile(r"(0x)?[0-9a-fA-F]{64}")

_ENGLISH = Mnemonic("english")


@dataclass(frozen=True, slots=True)
class AccountKeys:
    """The secret and public keys of one account. ``repr`` never shows a secret."""

    eth_private_key: bytes = field(repr=False)
    address: str
    x25519_private: bytes = field(repr=False)
    x25519_public: bytes

    def __post_init__(self) -> None:
        for name in ("eth_private_key", "x25519_private", "x25519_public"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != 32:
                raise UsageError(f"AccountKeys.{name} must be 32 bytes")

    def __repr__(self) -> str:
        return f"AccountKeys(address={self.address!r}, x25519_public={self.x25519_public.hex()!r})"

    def x25519_private_key(self) -> X25519PrivateKey:
        """The X25519 private key as a ``cryptography`` object (for key agreement)."""
        return X25519PrivateKey.from_private_bytes(self.x25519_private)


def generate_mnemonic(entropy: bytes) -> str:
    """Encode ``entropy`` (16, 20, 24, 28 or 32 bytes, e.g. ``os.urandom(32)``) as a phrase."""
    if len(entropy) not in ENTROPY_BYTES_BY_WORDS.values():
        raise UsageError(
            f"entropy must be 16, 20, 24, 28 or 32 bytes (12 to 24 words), got {len(entropy)}"
        )
    return str(_ENGLISH.to_mnemonic(entropy))


def validate_mnemonic(phrase: str) -> str:
    """Return ``phrase`` normalised (NFKD, lower case, single spaces) or raise ``UsageError``.

    The error names the first word that is not in the English BIP-39 list, or says the checksum
    failed; it never repeats the phrase itself.
    """
    words = unicodedata.normalize("NFKD", phrase).lower().split()
    if len(words) not in ENTROPY_BYTES_BY_WORDS:
        raise UsageError(f"a seed phrase has 12, 15, 18, 21 or 24 words; this one has {len(words)}")
    known = set(_ENGLISH.wordlist)
    for position, word in enumerate(words, start=1):
        if word not in known:
            raise UsageError(
                f"word {position} of the seed phrase is not in the BIP-39 English word list; "
                "check its spelling"
            )
    normalised = " ".join(words)
    if not _ENGLISH.check(normalised):
        raise UsageError(
            "the seed phrase checksum does not match: a word is wrong or words are out of order"
        )
    return normalised


def from_mnemonic(phrase: str, index: int = 0, passphrase: str = "") -> AccountKeys:
    """Derive the account at ``m/44'/60'/0'/0/{index}`` of a BIP-39 phrase.

    ``passphrase`` is the optional BIP-39 passphrase ("25th word"), not the keystore passphrase.
    """
    if not 0 <= index <= _MAX_INDEX:
        raise UsageError(f"account index must be between 0 and {_MAX_INDEX}, got {index}")
    normalised = validate_mnemonic(phrase)
    # Mnemonic.to_seed is exactly what eth_account's seed_from_mnemonic returns once the phrase
    # is valid; calling it directly skips that function's language guessing, which can refuse a
    # valid English phrase made only of words that are also French prefixes.
    seed = Mnemonic.to_seed(normalised, passphrase)
    return from_private_key(key_from_seed(seed, ETH_PATH_TEMPLATE.format(index=index)))


def from_private_key(private_key: bytes) -> AccountKeys:
    """Build an account from a raw 32-byte Ethereum private key."""
    if len(private_key) != 32:
        raise UsageError(f"an Ethereum private key is 32 bytes, got {len(private_key)}")
    if not 0 < int.from_bytes(private_key, "big") < _SECP256K1_ORDER:
        raise UsageError("the Ethereum private key is out of range for secp256k1")
    address = PrivateKey(private_key).public_key.to_checksum_address()
    x_private = x25519_from_eth(private_key)
    x_public = (
        X25519PrivateKey.from_private_bytes(x_private)
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return AccountKeys(
        eth_private_key=bytes(private_key),
        address=str(address),
        x25519_private=x_private,
        x25519_public=x_public,
    )


def parse_private_key_hex(text: str) -> bytes:
    """Parse 64 hex digits (optionally ``0x``-prefixed) into key bytes, or raise ``UsageError``."""
    text = text.strip()
    if not _HEX_KEY.fullmatch(text):
        raise UsageError("a private key is 64 hex digits, optionally prefixed with 0x")
    return bytes.fromhex(text.removeprefix("0x"))


def x25519_from_eth(eth_private_key: bytes) -> bytes:
    """HKDF-SHA256(ikm=eth key, salt=empty, info=X25519_INFO), 32 bytes of X25519 private key."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"", info=X25519_INFO)
    return hkdf.derive(eth_private_key)
