"""A node's error answers as exceptions: the JSON ``{"error": {"code", "message"}}`` of the
HTTP API and of block streams, mapped onto the ``NucluxError`` tree (401 ``Unauthenticated``,
403 ``Forbidden``, 404 ``ObjectNotFound``, 422 ``IntegrityError``, 507 ``QuotaExceeded``, other
4xx ``UsageError``, the storage protocol's revision conflicts and mismatches)."""

from __future__ import annotations

from typing import Any

from nuclux.core.compute_account import (
    CountersignRequired,
    EscrowExhausted,
    TooManyDeclined,
    UsageRejected,
)
from nuclux.core.job import ComputeBusy, JobRejected
from nuclux.errors import (
    Forbidden,
    IntegrityError,
    NucluxError,
    ObjectNotFound,
    QuotaExceeded,
    ReplayedRequest,
    StaleRequest,
    StoreError,
    Unauthenticated,
    UsageError,
)
from nuclux.net.answers import (
    NodeRequestError,
    RevisionConflict,
    RevisionMismatch,
    bounded_json,
    revision_from_json,
)

_BY_CODE: dict[str, type[NucluxError]] = {
    "unauthenticated": Unauthenticated,
    "stale_request": StaleRequest,
    "replayed_request": ReplayedRequest,
    "forbidden": Forbidden,
    "not_found": ObjectNotFound,
    "unknown_lease": ObjectNotFound,
    "integrity": IntegrityError,
    "quota_exceeded": QuotaExceeded,
    "capacity_exceeded": QuotaExceeded,
    "compute_busy": ComputeBusy,
    "job_rejected": JobRejected,
    "countersign_required": CountersignRequired,
    "escrow_exhausted": EscrowExhausted,
    "too_many_declined": TooManyDeclined,
    "usage_rejected": UsageRejected,
}


def node_error(status: int, raw: bytes) -> Exception:
    """The exception for a node's error answer (its HTTP status and JSON body)."""
    err: Any = {}
    try:
        err = bounded_json(raw)["error"]
        code, message = str(err["code"]), str(err["message"])
    except (UsageError, KeyError, TypeError, ValueError):
        code, message = "unknown", raw[:200].decode("utf-8", "replace")
    if code == "revision_conflict":
        latest = err.get("latest")
        return RevisionConflict(message, None if latest is None else revision_from_json(latest))
    if code == "revision_mismatch":
        try:
            used, root, count = err["used_bytes"], err["root"], err["share_count"]
            return RevisionMismatch(message, int(used), bytes.fromhex(root), int(count))
        except (KeyError, TypeError, ValueError):
            return NodeRequestError(status, code, message)
    cls = _BY_CODE.get(code)
    if cls is not None:
        return cls(message)
    if status == 400:
        return UsageError(message)
    if status >= 500 and code == "store":
        return StoreError(message)
    return NodeRequestError(status, code, message)
