"""Account keys: BIP-39 derivation (``derive``) and the encrypted keystore (``keystore``)."""

from nuclux.keys.derive import (
    AccountKeys,
    from_mnemonic,
    from_private_key,
    generate_mnemonic,
    parse_private_key_hex,
    validate_mnemonic,
)
from nuclux.keys.keystore import DEFAULT_KDF_N, AccountInfo, Keystore, validate_name

__all__ = [
    "DEFAULT_KDF_N",
    "AccountInfo",
    "AccountKeys",
    "Keystore",
    "from_mnemonic",
    "from_private_key",
    "generate_mnemonic",
    "parse_private_key_hex",
    "validate_mnemonic",
    "validate_name",
]
