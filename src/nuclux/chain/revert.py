"""Turn revert data from any backend into a ``ContractRevert`` subclass with a clear message.

Backends report reverts differently: eth-tester raises ``TransactionFailed`` carrying the raw
bytes, JSON-RPC nodes an error whose ``data`` is hex. Both end up in ``decode_revert``.
"""

from __future__ import annotations

import ast
import re
from typing import Any

from eth_abi.abi import decode as abi_decode
from eth_abi.abi import encode as abi_encode
from eth_abi.exceptions import DecodingError

from nuclux.chain.abi import error_selectors
from nuclux.core.lease import LeaseState
from nuclux.errors import (
    ContractRevert,
    InsufficientFunds,
    InvalidArgument,
    InvalidLeaseState,
    NotAuthorized,
    ProviderUnavailable,
)

_CLASS_BY_ERROR: dict[str, type[ContractRevert]] = {
    # authorisation
    "NotConsumer": NotAuthorized,
    "NotModule": NotAuthorized,
    "NotOwnerOrOperator": NotAuthorized,
    "OnlyLeaseManager": NotAuthorized,
    "OwnableUnauthorizedAccount": NotAuthorized,
    "ERC2612InvalidSigner": NotAuthorized,
    # lease states and deadlines
    "UnknownLease": InvalidLeaseState,
    "BadState": InvalidLeaseState,
    "DeadlinePassed": InvalidLeaseState,
    "DeadlineNotPassed": InvalidLeaseState,
    "TermNotEnded": InvalidLeaseState,
    "TermEnded": InvalidLeaseState,
    "DisputeWindowOpen": InvalidLeaseState,
    "NothingToClaim": InvalidLeaseState,
    "SubmissionClosed": InvalidLeaseState,
    "StaleRevision": InvalidLeaseState,
    "TotalDecreased": InvalidArgument,
    "BadSignature": NotAuthorized,
    "ECDSAInvalidSignature": NotAuthorized,
    "ECDSAInvalidSignatureLength": NotAuthorized,
    "ECDSAInvalidSignatureS": NotAuthorized,
    # storage proofs: timing of seeds, proofs and demands (BadProof is an InvalidArgument)
    "EpochNotStarted": InvalidLeaseState,
    "SeedAlreadyArmed": InvalidLeaseState,
    "SeedNotArmed": InvalidLeaseState,
    "SeedNotRecorded": InvalidLeaseState,
    "SeedNotReady": InvalidLeaseState,
    "ZeroSeed": InvalidLeaseState,
    "ProofTooLate": InvalidLeaseState,
    "EpochDecided": InvalidLeaseState,
    "AdvanceFirst": InvalidLeaseState,
    "DemandOpen": InvalidLeaseState,
    "OneDemandPerEpoch": InvalidLeaseState,
    "NoDemand": InvalidLeaseState,
    "DemandNotDue": InvalidLeaseState,
    # conflicting revisions (NotSameRevision and NotConflicting are InvalidArgument)
    "ConflictAlreadyReported": InvalidLeaseState,
    # money
    "ERC20InsufficientBalance": InsufficientFunds,
    "ERC20InsufficientAllowance": InsufficientFunds,
    "StakeTooLow": InsufficientFunds,
    # providers
    "NotRegistered": ProviderUnavailable,
    "ProviderNotServing": ProviderUnavailable,
    "AlreadyRegistered": ProviderUnavailable,
    "NotLeaving": ProviderUnavailable,
    "AlreadyLeaving": ProviderUnavailable,
    "StillBonded": ProviderUnavailable,
    # auctions (RevealMismatch, BidAboveReserve, TooManyBids, TooManyExclusions, ... are
    # InvalidArgument)
    "NotAuctionHouse": NotAuthorized,
    "InsufficientEscrow": InsufficientFunds,
    "NotEnoughProviders": ProviderUnavailable,
    "CapacityTooSmall": ProviderUnavailable,
    "ProviderExcluded": NotAuthorized,
    "CommitClosed": InvalidLeaseState,
    "RevealNotOpen": InvalidLeaseState,
    "RevealClosed": InvalidLeaseState,
    "RevealOpen": InvalidLeaseState,
    "AlreadyFinalized": InvalidLeaseState,
}

_NOT_SERVING = {
    0: "not registered",
    1: "paused",
    2: "leaving",
    3: "suspended",
    4: "no capacity",
    5: "stake below minimum",
}

_PANIC = bytes.fromhex("4e487b71")
_ERROR_STRING = bytes.fromhex("08c379a0")


def _fmt(name: str, value: Any) -> str:
    if isinstance(value, bytes):
        return f"{name}=0x{value.hex()}"
    if name == "state" and isinstance(value, int):
        return f"state={LeaseState(value).label}"
    if name == "reason" and isinstance(value, int):
        return f"reason={_NOT_SERVING.get(value, value)}"
    return f"{name}={value}"


def decode_revert(data: bytes, context: str = "") -> ContractRevert:
    """A ``ContractRevert`` (subclass) for revert ``data``; unknown data still gives one."""
    prefix = f"{context}: " if context else ""
    if len(data) < 4:
        return ContractRevert(f"{prefix}the contract reverted without a reason")
    selector, body = data[:4], data[4:]
    if selector == _ERROR_STRING:
        try:
            (msg,) = abi_decode(["string"], body)
        except DecodingError:
            msg = body.hex()
        return ContractRevert(f"{prefix}reverted: {msg}", "Error", (msg,))
    if selector == _PANIC:
        return ContractRevert(f"{prefix}contract panic (code 0x{body.hex()[-2:]})", "Panic", ())
    spec = error_selectors().get(selector)
    if spec is None:
        return ContractRevert(f"{prefix}reverted with unknown error 0x{data.hex()}")
    try:
        args = tuple(abi_decode(list(spec.input_types), body))
    except DecodingError:
        args = ()
    shown = ", ".join(_fmt(n, a) for n, a in zip(spec.input_names, args, strict=False))
    cls = _CLASS_BY_ERROR.get(spec.name, InvalidArgument)
    return cls(f"{prefix}{spec.name}({shown})", spec.name, args)


_HEX = re.compile(r"0x[0-9a-fA-F]{8,}")


def revert_data_from_exception(exc: BaseException) -> bytes | None:
    """Dig the raw revert bytes out of whatever exception a backend raised."""
    data = getattr(exc, "data", None)
    if isinstance(data, str) and data.startswith("0x"):
        return bytes.fromhex(data[2:])
    if isinstance(data, dict):
        inner = data.get("data")
        if isinstance(inner, str) and inner.startswith("0x"):
            return bytes.fromhex(inner[2:])
    for arg in exc.args:
        if isinstance(arg, bytes | bytearray):
            return bytes(arg)
        if isinstance(arg, dict) and isinstance(arg.get("data"), str):
            return bytes.fromhex(str(arg["data"]).removeprefix("0x"))
    if type(exc).__name__ == "TransactionFailed":
        return _from_tester_message(str(exc))
    return None


def _from_tester_message(text: str) -> bytes:
    """eth-tester says ``execution reverted: b'...'`` (raw data) or a decoded reason string."""
    reason = text.removeprefix("execution reverted: ").strip()
    if reason[:2] in ("b'", 'b"'):
        try:
            value = ast.literal_eval(reason)
        except (ValueError, SyntaxError):
            value = None
        if isinstance(value, bytes):
            return value
    match = _HEX.fullmatch(reason)
    if match:
        return bytes.fromhex(reason[2:])
    if not reason or reason == "execution reverted":
        return b""
    return _ERROR_STRING + abi_encode(["string"], [reason])
