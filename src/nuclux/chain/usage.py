"""Signed cumulative usage: the off-chain state metered leases settle on.

A ``Usage(leaseId, revision, cumulative)`` statement is EIP-712 typed data under the domain
of the class's ``CumulativeSettlement`` module (name "Nuclux Usage", version "1", the chain
id, the module address), so a signature is valid for one lease on one module on one chain.
Compute receipts carry both signatures; bandwidth vouchers only the consumer's.

Signing and recovery compute the EIP-712 digest directly (keccak over the ABI encoding, as
the contract's ``usageDigest`` does) and use libsecp256k1 on it: a compute job signs and checks
one of these per job on each side, and the generic typed-data path costs milliseconds.
``typed_data`` is kept as the reference the fast path is tested against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from coincurve import PrivateKey, PublicKey
from eth_account.signers.local import LocalAccount

from nuclux.chain.eip712 import module_typed_data
from nuclux.core.auth import keccak256, to_address
from nuclux.errors import UsageError

_DOMAIN_TYPEHASH = keccak256(
    b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
_USAGE_TYPEHASH = keccak256(b"Usage(uint256 leaseId,uint64 revision,uint256 cumulative)")
_SECP256K1_HALF_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141 // 2

MAX_TOTAL = 2**192 - 1
MAX_REVISION = 2**64 - 1


@dataclass(frozen=True, slots=True)
class Usage:
    lease_id: int
    revision: int
    cumulative: int

    def __post_init__(self) -> None:
        if not 0 < self.revision <= MAX_REVISION:
            raise UsageError("a usage revision is a positive 64-bit number")
        if not 0 <= self.cumulative <= MAX_TOTAL:
            raise UsageError("a cumulative total is a non-negative 192-bit amount of wei")
        if self.lease_id <= 0:
            raise UsageError("lease ids start at 1")


def typed_data(usage: Usage, chain_id: int, module: str) -> dict[str, Any]:
    return module_typed_data(
        "Nuclux Usage",
        "Usage",
        [("leaseId", "uint256"), ("revision", "uint64"), ("cumulative", "uint256")],
        {"leaseId": usage.lease_id, "revision": usage.revision, "cumulative": usage.cumulative},
        chain_id,
        module,
    )


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def domain_separator(chain_id: int, module: str) -> bytes:
    return keccak256(
        _DOMAIN_TYPEHASH
        + keccak256(b"Nuclux Usage")
        + keccak256(b"1")
        + _word(chain_id)
        + bytes(12)
        + bytes.fromhex(module[2:])
    )


def usage_digest(usage: Usage, chain_id: int, module: str) -> bytes:
    """The EIP-712 digest the module's ``usageDigest`` computes for ``usage``."""
    struct = keccak256(
        _USAGE_TYPEHASH + _word(usage.lease_id) + _word(usage.revision) + _word(usage.cumulative)
    )
    return keccak256(b"\x19\x01" + domain_separator(chain_id, module) + struct)


def sign_usage(account: LocalAccount, usage: Usage, chain_id: int, module: str) -> bytes:
    """``account``'s 65-byte signature (r || s || v, v = 27 or 28) over ``usage``."""
    digest = usage_digest(usage, chain_id, module)
    sig = PrivateKey(bytes(account.key)).sign_recoverable(digest, hasher=None)
    return sig[:64] + bytes([sig[64] + 27])


def usage_signer(usage: Usage, signature: bytes, chain_id: int, module: str) -> str | None:
    """The address that signed ``usage`` for the module, or None if nothing recovers (or the
    signature is not the canonical low-s form the contract accepts)."""
    if len(signature) != 65 or signature[64] not in (27, 28):
        return None
    if not 0 < int.from_bytes(signature[32:64], "big") <= _SECP256K1_HALF_N:
        return None
    digest = usage_digest(usage, chain_id, module)
    try:
        key = PublicKey.from_signature_and_message(
            signature[:64] + bytes([signature[64] - 27]), digest, hasher=None
        )
    except (ValueError, TypeError):
        return None
    return str(to_address(keccak256(key.format(compressed=False)[1:])[12:]))
