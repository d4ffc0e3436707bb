"""Signed storage revisions: the off-chain state a storage lease advances by.

A ``Revision(leaseId, revision, usedBytes, shareCount, root)`` statement is EIP-712 typed data
under the domain of the ``StorageSettlement`` module (name "Nuclux Storage", version "1", the
chain id, the module address), so a signature is valid for one lease on one module on one
chain. ``root`` is the lease root (``nuclux.core.merkle.lease_root``) over the shares the
lease holds; both the consumer and the provider (owner or operator key) sign every revision.
Storing or deleting a file is a new revision; nothing goes on chain until someone submits one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eth_account.signers.local import LocalAccount

from nuclux.chain.eip712 import module_typed_data, sign_typed
from nuclux.errors import UsageError

MAX_U64 = 2**64 - 1
MAX_SHARES = 2**40 - 1  # what the contract stores


@dataclass(frozen=True, slots=True)
class Revision:
    lease_id: int
    revision: int
    used_bytes: int
    share_count: int
    root: bytes

    def __post_init__(self) -> None:
        if self.lease_id <= 0:
            raise UsageError("lease ids start at 1")
        if not 0 < self.revision <= MAX_U64:
            raise UsageError("a revision number is a positive 64-bit number")
        if not 0 <= self.used_bytes <= MAX_U64:
            raise UsageError("used bytes are a 64-bit number")
        if not 0 <= self.share_count <= MAX_SHARES:
            raise UsageError(f"a lease holds at most {MAX_SHARES} shares")
        if len(self.root) != 32:
            raise UsageError("a lease root is 32 bytes")

    def as_args(self) -> tuple[int, int, int, bytes]:
        """The contract's ``Revision`` struct (the lease id is passed on its own)."""
        return (self.revision, self.used_bytes, self.share_count, self.root)


@dataclass(frozen=True, slots=True)
class SignedRevision:
    revision: Revision
    consumer_sig: bytes
    provider_sig: bytes


def typed_data(rev: Revision, chain_id: int, module: str) -> dict[str, Any]:
    return module_typed_data(
        "Nuclux Storage",
        "Revision",
        [
            ("leaseId", "uint256"),
            ("revision", "uint64"),
            ("usedBytes", "uint64"),
            ("shareCount", "uint64"),
            ("root", "bytes32"),
        ],
        {
            "leaseId": rev.lease_id,
            "revision": rev.revision,
            "usedBytes": rev.used_bytes,
            "shareCount": rev.share_count,
            "root": rev.root,
        },
        chain_id,
        module,
    )


def sign_revision(account: LocalAccount, rev: Revision, chain_id: int, module: str) -> bytes:
    """``account``'s 65-byte signature over ``rev``."""
    return sign_typed(account, typed_data(rev, chain_id, module))


def _hex_field(doc: dict[str, Any], name: str, size: int | None) -> bytes:
    value = doc.get(name)
    if not isinstance(value, str):
        raise UsageError(f"the revision document has no {name!r} (hex)")
    try:
        raw = bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raise UsageError(f"the revision document's {name!r} is not hex") from None
    if size is not None and len(raw) != size:
        raise UsageError(f"the revision document's {name!r} must be {size} bytes, not {len(raw)}")
    return raw


def _int_field(doc: dict[str, Any], name: str) -> int:
    value = doc.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise UsageError(f"the revision document has no integer {name!r}")
    return value


def provider_signed_from_json(doc: Any) -> tuple[Revision, bytes]:
    """A revision and the provider's signature over it, from a JSON document shaped as the
    node's ``GET /v1/leases/{lease}/revisions/latest`` answer (``lease``, ``revision``,
    ``used_bytes``, ``share_count``, ``root`` and ``provider_signature``; other fields, such as
    the consumer's signature and the share list, are ignored). ``UsageError`` if malformed."""
    if not isinstance(doc, dict):
        raise UsageError("a revision document is a JSON object")
    rev = Revision(
        _int_field(doc, "lease"),
        _int_field(doc, "revision"),
        _int_field(doc, "used_bytes"),
        _int_field(doc, "share_count"),
        _hex_field(doc, "root", 32),
    )
    return rev, _hex_field(doc, "provider_signature", 65)


def revision_to_json(
    rev: Revision, provider_sig: bytes, consumer_sig: bytes = b""
) -> dict[str, Any]:
    """The document ``provider_signed_from_json`` reads back."""
    out: dict[str, Any] = {
        "lease": rev.lease_id,
        "revision": rev.revision,
        "used_bytes": rev.used_bytes,
        "share_count": rev.share_count,
        "root": rev.root.hex(),
        "provider_signature": provider_sig.hex(),
    }
    if consumer_sig:
        out["consumer_signature"] = consumer_sig.hex()
    return out
