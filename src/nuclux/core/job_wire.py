"""The compute API's wire formats: a job request body and a job response.

A job request (``POST /v1/leases/{lease}/jobs``) is one binary body::

    magic "NXJ1" | spec_len u32 | spec (``encode_job_spec``) | module_len u32 | module
    | every input's bytes, in the spec's order, each exactly the size the spec names

``module_len = 0`` asks the node to use the module it already holds under the spec's module
hash (it answers ``409 module_unknown`` if it has none, and the client sends it again in
full). Decoding is strict: exact lengths, the module's and every input's sha256 checked
against the spec, nothing left over.

A job response is JSON::

    {"job": hex, "status": name, "exit_code": n, "message": str, "fuel_used": "n",
     "wall_seconds": x, "memory_bytes": n, "stdout": b64, "stderr": b64,
     "outputs": {name: b64}, "result_hash": hex, "receipt": hex (170 bytes)}

``decode_job_response`` rebuilds the ``JobResult`` (its result hash recomputed from the
fields) and checks the receipt against it and the spec: same job, lease, fuel and result hash,
fuel within the spec's limit. Whose key signed the receipt is the caller's check
(``verify_receipt``), since only it knows the provider's operator.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Final

from nuclux.core.job import (
    MAX_MODULE_BYTES,
    JobResult,
    JobSpec,
    JobStatus,
    Receipt,
    check_inputs,
    check_module,
    decode_job_spec,
    decode_receipt,
    encode_job_spec,
    encode_receipt,
)
from nuclux.core.reference import Reader
from nuclux.errors import IntegrityError, UsageError

JOB_REQUEST_MAGIC: Final = b"NXJ1"
MAX_SPEC_BYTES: Final = 1 << 20


def encode_job_request(
    spec: JobSpec, module: bytes | None, inputs: Mapping[str, bytes] | None = None
) -> list[bytes]:
    """The request body as a list of parts (join them, or stream them without copying)."""
    given = dict(inputs or {})
    check_inputs(spec, given)
    raw = encode_job_spec(spec)
    mod = b"" if module is None else module
    parts = [JOB_REQUEST_MAGIC, len(raw).to_bytes(4, "big"), raw, len(mod).to_bytes(4, "big")]
    if mod:
        parts.append(mod)
    parts.extend(given[i.name] for i in spec.inputs)
    return parts


def decode_job_request(
    data: bytes, *, max_input_bytes: int
) -> tuple[JobSpec, bytes | None, dict[str, bytes]]:
    """(spec, module or None, inputs) from a request body; ``UsageError`` (malformed),
    ``IntegrityError`` (a hash differs from the spec's) or ``JobRejected`` (not a module)."""
    r = Reader(bytes(data), "job request")
    if r.take(4) != JOB_REQUEST_MAGIC:
        raise r.fail("bad magic (expected NXJ1)")
    spec_len = r.uint(4)
    if not 0 < spec_len <= MAX_SPEC_BYTES:
        raise r.fail(f"spec of {spec_len} bytes (1..{MAX_SPEC_BYTES})")
    spec = decode_job_spec(r.take(spec_len))
    mod_len = r.uint(4)
    if mod_len > MAX_MODULE_BYTES:
        raise r.fail(f"module of {mod_len} bytes, above {MAX_MODULE_BYTES}")
    module: bytes | None = None
    if mod_len:
        module = r.take(mod_len)
        if check_module(module) != spec.module_hash:
            raise IntegrityError("the module does not hash to the spec's module_hash")
    total = sum(i.size for i in spec.inputs)
    if total > max_input_bytes:
        raise UsageError(f"inputs of {total} bytes, above this node's {max_input_bytes} bytes")
    inputs = {i.name: r.take(i.size) for i in spec.inputs}
    r.end()
    check_inputs(spec, inputs)
    return spec, module, inputs


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise UsageError(f"malformed job response: {what} is not base64 text")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise UsageError(f"malformed job response: {what} is not base64") from None


def encode_job_response(result: JobResult, receipt: Receipt) -> dict[str, Any]:
    return {
        "job": receipt.job_id.hex(),
        "status": result.status.name,
        "exit_code": result.exit_code,
        "message": result.message,
        "fuel_used": str(result.fuel_used),
        "wall_seconds": result.wall_seconds,
        "memory_bytes": result.memory_bytes,
        "stdout": _b64(result.stdout),
        "stderr": _b64(result.stderr),
        "outputs": {name: _b64(data) for name, data in sorted(result.outputs.items())},
        "result_hash": result.result_hash.hex(),
        "receipt": encode_receipt(receipt).hex(),
    }


def decode_job_response(body: Any, spec: JobSpec, lease_id: int) -> tuple[JobResult, Receipt]:
    """The result and receipt a node returned for ``spec`` under ``lease_id``, checked to
    agree with each other and with the spec (``IntegrityError`` if they do not)."""
    try:
        status = JobStatus[str(body["status"])]
        outputs_raw = body["outputs"]
        if not isinstance(outputs_raw, dict):
            raise TypeError("outputs is not an object")
        result = JobResult(
            status=status,
            exit_code=int(body["exit_code"]),
            stdout=_unb64(body["stdout"], "stdout"),
            stderr=_unb64(body["stderr"], "stderr"),
            outputs={str(k): _unb64(v, f"output {k}") for k, v in outputs_raw.items()},
            fuel_used=int(body["fuel_used"]),
            wall_seconds=float(body["wall_seconds"]),
            memory_bytes=int(body["memory_bytes"]),
            message=str(body["message"]),
        )
        receipt = decode_receipt(bytes.fromhex(str(body["receipt"])))
        claimed = bytes.fromhex(str(body["result_hash"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"malformed job response: {exc}") from None
    if claimed != result.result_hash or receipt.result_hash != result.result_hash:
        raise IntegrityError("the job's results do not hash to the result hash it was sent with")
    if receipt.job_id != spec.job_id:
        raise IntegrityError("the receipt names another job")
    if receipt.lease_id != lease_id:
        raise IntegrityError(f"the receipt names lease {receipt.lease_id}, not {lease_id}")
    if receipt.fuel_used != result.fuel_used:
        raise IntegrityError("the receipt's fuel differs from the result's")
    if result.fuel_used > spec.limits.fuel:
        raise IntegrityError(
            f"the provider reports {result.fuel_used} fuel, above the job's limit of "
            f"{spec.limits.fuel}"
        )
    if (
        len(result.stdout) > spec.limits.stdout_bytes
        or sum(len(v) for v in result.outputs.values()) > spec.limits.output_bytes
    ):
        raise IntegrityError("the job's results exceed the limits it ran under")
    return result, receipt
