"""A consumer's compute calls to one node (``docs/spec/compute-protocol.md``).

``ComputeNode(client)`` wraps a pinned, signing ``NodeClient``:

- ``run(lease, spec, module, inputs)`` posts a job (``nuclux.core.job_wire``) and returns the
  checked ``(JobResult, Receipt)``; the module is sent only when the node does not hold it
  already (first try without it once the node is known to have it; ``module_unknown`` makes
  it send the module).
- ``countersign(update, signature)`` sends the consumer's signed ``UsageUpdate`` and returns
  the provider's signature over the same ``Usage``.
- ``account(lease)`` reads the node's account of a lease: the latest co-signed state with
  both signatures, the jobs awaiting countersignature, counts.

The receipt's signer is checked against the provider's operator by the caller.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nuclux.core.compute_account import LeaseAccount, PendingJob, UsageState, UsageUpdate
from nuclux.core.job import JobResult, JobSpec, Receipt
from nuclux.core.job_wire import decode_job_response, encode_job_request
from nuclux.errors import IntegrityError, UsageError
from nuclux.net.client import NodeClient, NodeRequestError

JOB_CONTENT_TYPE = "application/vnd.nuclux.job"


@dataclass(frozen=True, slots=True)
class NodeAccount:
    """A node's account of one compute lease (``GET /v1/leases/{lease}/usage``)."""

    lease_id: int
    price: int
    units: int
    escrow: int
    state: UsageState
    consumer_signature: bytes  # empty before the first revision
    provider_signature: bytes
    pending: dict[bytes, PendingJob]
    running: int
    jobs_paid: int
    jobs_declined: int


def account_from_json(body: Any) -> NodeAccount:
    """The node's answer: its ``LeaseAccount`` (``to_json``) plus signatures and running jobs."""
    try:
        book = LeaseAccount.from_json(body)
        return NodeAccount(
            lease_id=book.lease_id,
            price=book.price,
            units=book.units,
            escrow=book.escrow,
            state=book.state,
            consumer_signature=bytes.fromhex(body["consumer_signature"]),
            provider_signature=bytes.fromhex(body["provider_signature"]),
            pending=book.pending,
            running=int(body["running"]),
            jobs_paid=book.jobs_paid,
            jobs_declined=book.jobs_declined,
        )
    except (UsageError, KeyError, TypeError, ValueError) as exc:
        raise IntegrityError(f"malformed compute account from the node: {exc!r}") from None


class ComputeNode:
    def __init__(self, client: NodeClient) -> None:
        self.client = client
        self._modules: set[bytes] = set()  # module hashes this node holds

    async def run(
        self,
        lease_id: int,
        spec: JobSpec,
        module: bytes,
        inputs: Mapping[str, bytes] | None = None,
        *,
        timeout: float | None = None,
    ) -> tuple[JobResult, Receipt]:
        path = f"/v1/leases/{lease_id}/jobs"
        send_module = spec.module_hash not in self._modules
        try:
            body = await self._post_job(
                path, spec, module if send_module else None, inputs, timeout
            )
        except NodeRequestError as err:
            if err.code != "module_unknown" or send_module:
                raise
            self._modules.discard(spec.module_hash)
            body = await self._post_job(path, spec, module, inputs, timeout)
        self._modules.add(spec.module_hash)
        return decode_job_response(body, spec, lease_id)

    async def _post_job(
        self,
        path: str,
        spec: JobSpec,
        module: bytes | None,
        inputs: Mapping[str, bytes] | None,
        timeout: float | None,
    ) -> Any:
        parts = encode_job_request(spec, module, inputs)
        return await self.client.call(
            "POST", path, parts, content_type=JOB_CONTENT_TYPE, timeout=timeout
        )

    async def countersign(self, update: UsageUpdate, consumer_signature: bytes) -> bytes:
        """The provider's 65-byte signature over the ``Usage`` of ``update``."""
        body = json.dumps(update.to_json() | {"consumer_signature": consumer_signature.hex()})
        answer = await self.client.call(
            "POST", f"/v1/leases/{update.lease_id}/usage", body.encode()
        )
        try:
            sig = bytes.fromhex(answer["provider_signature"])
        except (KeyError, TypeError, ValueError) as exc:
            raise IntegrityError(f"malformed countersignature from the node: {exc!r}") from None
        if len(sig) != 65:
            raise IntegrityError("the node's usage signature is not 65 bytes")
        return sig

    async def account(self, lease_id: int) -> NodeAccount:
        return account_from_json(await self.client.call("GET", f"/v1/leases/{lease_id}/usage"))
