"""EIP-712 typed data under a settlement module's domain (name, version "1", chain id, the
module's address): the one shape every off-chain statement the modules accept shares."""

from __future__ import annotations

from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount

_DOMAIN = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]


def module_typed_data(
    domain: str,
    primary: str,
    fields: list[tuple[str, str]],
    message: dict[str, Any],
    chain_id: int,
    module: str,
) -> dict[str, Any]:
    """Typed data of ``primary`` (``fields``: name, type) in the domain ``domain`` of ``module``."""
    return {
        "types": {
            "EIP712Domain": _DOMAIN,
            primary: [{"name": n, "type": t} for n, t in fields],
        },
        "primaryType": primary,
        "domain": {
            "name": domain,
            "version": "1",
            "chainId": chain_id,
            "verifyingContract": module,
        },
        "message": message,
    }


def sign_typed(account: LocalAccount, data: dict[str, Any]) -> bytes:
    """``account``'s 65-byte signature over typed ``data``."""
    return bytes(account.sign_message(encode_typed_data(full_message=data)).signature)


def recover_typed(data: dict[str, Any], signature: bytes) -> str | None:
    """The address that signed typed ``data``, or None when ``signature`` does not recover."""
    try:
        return str(
            Account.recover_message(encode_typed_data(full_message=data), signature=signature)
        )
    except Exception:  # eth_keys raises several types for unrecoverable input
        return None
