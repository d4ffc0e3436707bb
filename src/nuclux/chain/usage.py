"""Signed cumulative usage: the off-chain state metered leases settle on.

A ``Usage(leaseId, revision, cumulative)`` statement is EIP-712 typed data under the domain
of the class's ``CumulativeSettlement`` module (name "Nuclux Usage", version "1", the chain
id, the module address), so a signature is valid for one lease on one module on one chain.
Compute receipts carry both signatures; bandwidth vouchers only the consumer's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount

from nuclux.chain.eip712 import module_typed_data, recover_typed, sign_typed
from nuclux.errors import UsageError

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


def sign_usage(account: LocalAccount, usage: Usage, chain_id: int, module: str) -> bytes:
    """``account``'s 65-byte signature over ``usage``."""
    return sign_typed(account, typed_data(usage, chain_id, module))


def usage_signer(usage: Usage, signature: bytes, chain_id: int, module: str) -> str | None:
    """The address that signed ``usage`` for the module, or None if nothing recovers."""
    return recover_typed(typed_data(usage, chain_id, module), signature)
