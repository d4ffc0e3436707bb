"""The node API's errors as HTTP answers: every ``NucluxError`` a handler raises becomes a JSON
body ``{"error": {"code", "message", ...}}`` with its status (``spec/node-api.md``, "Errors"),
in one middleware; block streams answer the same bodies (``error_fields``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from nuclux.core.compute_account import (
    CountersignRequired,
    EscrowExhausted,
    TooManyDeclined,
    UsageRejected,
)
from nuclux.core.job import ComputeBusy, ComputeError, JobRejected
from nuclux.errors import (
    CapacityExceeded,
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
from nuclux.node.compute.service import ModuleUnknown
from nuclux.node.shares import (
    MalformedShare,
    RevisionConflict,
    RevisionMismatch,
    ShareInRevision,
    StoredRevision,
)


class HttpError(NucluxError):
    """An error with an explicit HTTP status and code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


_STATUS: list[tuple[type[NucluxError], int, str]] = [
    (ComputeBusy, 503, "compute_busy"),
    (JobRejected, 422, "job_rejected"),
    (CountersignRequired, 409, "countersign_required"),
    (EscrowExhausted, 402, "escrow_exhausted"),
    (TooManyDeclined, 403, "too_many_declined"),
    (UsageRejected, 409, "usage_rejected"),
    (ModuleUnknown, 409, "module_unknown"),
    (ComputeError, 409, "compute"),
    (MalformedShare, 409, "malformed_share"),
    (ShareInRevision, 409, "in_revision"),
    (RevisionConflict, 409, "revision_conflict"),
    (RevisionMismatch, 409, "revision_mismatch"),
    (StaleRequest, 401, "stale_request"),
    (ReplayedRequest, 401, "replayed_request"),
    (Unauthenticated, 401, "unauthenticated"),
    (Forbidden, 403, "forbidden"),
    (ObjectNotFound, 404, "not_found"),
    (IntegrityError, 422, "integrity"),
    (QuotaExceeded, 507, "quota_exceeded"),
    (CapacityExceeded, 507, "capacity_exceeded"),
    (UsageError, 400, "bad_request"),
    (StoreError, 500, "store"),
]


def error_response(
    status: int, code: str, message: str, extra: dict[str, Any] | None = None
) -> web.Response:
    return web.json_response(error_body(code, message, extra), status=status)


def error_body(code: str, message: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message} | (extra or {})}


def revision_json(r: StoredRevision) -> dict[str, Any]:
    """A co-signed revision as the API returns it (``storage-protocol.md`` section 3)."""
    return {
        "lease": str(r.lease_id),
        "revision": r.revision,
        "used_bytes": r.used_bytes,
        "share_count": r.share_count,
        "root": r.root.hex(),
        "consumer_signature": r.consumer_sig.hex(),
        "provider_signature": r.provider_sig.hex(),
        "signed_at": r.signed_at,
        "shares": [[e.file_id.hex(), e.index] for e in r.entries],
        "entries": [[e.root.hex(), e.leaf_count, e.size] for e in r.entries],
    }


def _error_extra(err: NucluxError) -> dict[str, Any] | None:
    """The machine-readable details some 409s carry beside the message."""
    if isinstance(err, RevisionConflict):
        return {"latest": None if err.latest is None else revision_json(err.latest)}
    if isinstance(err, RevisionMismatch):
        p = err.plan
        return {"used_bytes": p.used_bytes, "root": p.root.hex(), "share_count": p.share_count}
    return None


def error_fields(err: NucluxError) -> tuple[int, str, str, dict[str, Any] | None]:
    """An error's HTTP status, code, message and extra details, as the API answers it."""
    if isinstance(err, HttpError):
        return err.status, err.code, str(err), None
    for cls, status, code in _STATUS:
        if isinstance(err, cls):
            return status, code, str(err), _error_extra(err)
    return 500, "internal", str(err), None


@web.middleware
async def errors_as_json(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except NucluxError as err:
        return error_response(*error_fields(err))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status, "bad_request"
        )
        return error_response(exc.status, code, exc.reason)
