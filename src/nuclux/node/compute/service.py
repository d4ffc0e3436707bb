"""The node's compute API (``docs/spec/compute-protocol.md``): jobs under compute leases.

Theory of operation
-------------------
``POST /v1/leases/{lease}/jobs`` authenticates the consumer like every lease request, reads
the body (bounded by the node's ceiling), decodes it strictly (``nuclux.core.job_wire``), and
asks the lease's ``LeaseAccount`` to admit the job (slots, unpaid work, escrow) before
anything runs. The job runs in the node's ``ComputePool``; a module it cannot run costs
nothing (the account forgets the job); a job that ran, whatever its end, is pending on the
lease with the fuel it used, and the answer carries the results and a receipt signed by the
operator key. ``POST .../usage`` checks the consumer's signed update against the account and
the EIP-712 signature, countersigns with the operator key and persists both signatures
before answering. ``GET .../usage`` returns the account.

Modules are kept in a small cache by hash (``module_cache_bytes``), so a consumer sends a
module once and later jobs name it by hash only.

``corrupt_results`` is a test-only option: the node changes every result's stdout before
hashing and signing it, as a lying provider would, so replication can be tested end to end.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiohttp import web

from nuclux.chain import Ledger
from nuclux.chain.usage import Usage, usage_signer
from nuclux.core.auth import RequestVerifier
from nuclux.core.compute_account import LeaseAccount, UsageUpdate
from nuclux.core.job import MAX_MODULE_BYTES, JobResult, sign_receipt
from nuclux.core.job_wire import MAX_SPEC_BYTES, decode_job_request, encode_job_response
from nuclux.core.lease import Lease, LeaseState
from nuclux.core.types import ResourceClass
from nuclux.errors import Forbidden, NucluxError, Unauthenticated, UsageError
from nuclux.net.answers import bounded_json
from nuclux.net.signing import CONTENT_SHA256_HEADER, authenticate, check_body
from nuclux.node.compute.accounts import ComputeAccounts
from nuclux.node.compute.config import PoolLimits
from nuclux.node.compute.pool import ComputePool

log = logging.getLogger("nuclux.node.compute")

SERVING = (LeaseState.ACTIVE, LeaseState.ACTIVE_TICKETED)
MAX_USAGE_BODY = 256 << 10


class ModuleUnknown(NucluxError):
    """The request named a module by hash that this node does not hold."""


@dataclass
class UsageSigner:
    """Signs and checks ``Usage`` statements for the compute module of one deployment."""

    sign: Callable[[Usage], bytes]  # the operator key's signature
    chain_id: int
    module: str

    def signer_of(self, usage: Usage, signature: bytes) -> str | None:
        return usage_signer(usage, signature, self.chain_id, self.module)


@dataclass
class ComputeService:
    pool: ComputePool
    accounts: ComputeAccounts
    operator_key: bytes
    usage_signer: UsageSigner
    verifier: RequestVerifier
    lease_for: Callable[[int, ResourceClass], Awaitable[Lease]]  # live lease of this provider
    clock: Callable[[], int]
    corrupt_results: bool = False
    module_cache_bytes: int = 256 << 20
    _modules: OrderedDict[bytes, bytes] = field(default_factory=OrderedDict)
    _cached_bytes: int = 0
    jobs_run: int = 0

    def routes(self, r: web.UrlDispatcher, api: str, lease_re: Callable[[str], int]) -> None:
        self._lease_id = lease_re
        r.add_post(f"{api}/leases/{{lease}}/jobs", self.post_job)
        r.add_post(f"{api}/leases/{{lease}}/usage", self.post_usage)
        r.add_get(f"{api}/leases/{{lease}}/usage", self.get_usage)

    async def close(self) -> None:
        await self.pool.close()
        self.accounts.close()

    def info(self) -> dict[str, Any]:
        return {"slots": self.pool.slots, "busy": self.pool.busy, "jobs_run": self.jobs_run}

    # ------------------------------------------------------------------ checks

    async def _consumer_lease(self, request: web.Request) -> tuple[Lease, bytes | None]:
        lease_id = self._lease_id(request.match_info["lease"])
        who = authenticate(request, self.verifier, now=self.clock())
        lease = await self.lease_for(lease_id, ResourceClass.COMPUTE)
        if who.address.lower() != lease.consumer.lower():
            raise Forbidden(f"{who.address} is not the consumer of lease {lease_id}")
        return lease, who.content_sha256

    async def _body(self, request: web.Request, limit: int, sha: bytes | None) -> bytes:
        size = request.content_length
        if size is None:
            raise UsageError("POST needs a Content-Length")
        if size > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
        if CONTENT_SHA256_HEADER not in request.headers:
            raise UsageError(f"POST needs {CONTENT_SHA256_HEADER}, the signed body hash")
        body = await request.read()
        check_body(sha, hashlib.sha256(body).digest())
        return body

    def _account(self, lease: Lease) -> LeaseAccount:
        return self.accounts.open(lease.id, lease.price, lease.units, lease.escrow)

    # ------------------------------------------------------------------ modules

    def _remember(self, module_hash: bytes, module: bytes) -> None:
        if module_hash in self._modules:
            self._modules.move_to_end(module_hash)
            return
        self._modules[module_hash] = module
        self._cached_bytes += len(module)
        while self._cached_bytes > self.module_cache_bytes and len(self._modules) > 1:
            _, old = self._modules.popitem(last=False)
            self._cached_bytes -= len(old)

    # ------------------------------------------------------------------ handlers

    async def post_job(self, request: web.Request) -> web.Response:
        lease, sha = await self._consumer_lease(request)
        ceiling = self.pool.limits.ceiling
        limit = 12 + MAX_SPEC_BYTES + MAX_MODULE_BYTES + ceiling.scratch_bytes
        body = await self._body(request, limit, sha)
        spec, module, inputs = decode_job_request(body, max_input_bytes=ceiling.scratch_bytes)
        if module is None:
            module = self._modules.get(spec.module_hash)
            if module is None:
                raise ModuleUnknown(f"this node holds no module {spec.module_hash.hex()}")
        account = self._account(lease)
        account.admit(spec.job_id, spec.limits.fuel)
        try:
            result = await self.pool.run(spec, module, inputs)
        except BaseException:  # rejected, busy, cancelled: it never ran, nothing is owed
            account.abort(spec.job_id)
            raise
        self._remember(spec.module_hash, module)
        if self.corrupt_results:
            result = _corrupt(result)
        account.finish(spec.job_id, result.fuel_used, spec.deterministic)
        self.accounts.save(account)  # the signatures stay as they are
        self.jobs_run += 1
        receipt = sign_receipt(
            self.operator_key, spec.job_id, lease.id, result.fuel_used, result.result_hash
        )
        return web.json_response(encode_job_response(result, receipt))

    async def post_usage(self, request: web.Request) -> web.Response:
        lease, sha = await self._consumer_lease(request)
        raw = bounded_json(await self._body(request, MAX_USAGE_BODY, sha), max_depth=4)
        if not isinstance(raw, dict):
            raise UsageError("a usage update is a JSON object")
        update = UsageUpdate.from_json(raw)
        try:
            consumer_sig = bytes.fromhex(str(raw["consumer_signature"]))
        except (KeyError, ValueError):
            raise UsageError("a usage update carries consumer_signature in hex") from None
        if update.lease_id != lease.id:
            raise UsageError(f"the update names lease {update.lease_id}, not {lease.id}")
        account = self._account(lease)
        account.check(update)
        usage = Usage(lease.id, update.revision, update.cumulative)
        signer = self.usage_signer.signer_of(usage, consumer_sig)
        if signer is None or signer.lower() != lease.consumer.lower():
            raise Unauthenticated(
                f"the usage update is signed by {signer or 'nobody'}, not by the consumer"
                f" {lease.consumer}"
            )
        provider_sig = self.usage_signer.sign(usage)
        account.apply(update)
        self.accounts.save(account, (consumer_sig, provider_sig))
        return web.json_response({"provider_signature": provider_sig.hex()})

    async def get_usage(self, request: web.Request) -> web.Response:
        lease, _ = await self._consumer_lease(request)
        account = self._account(lease)
        consumer_sig, provider_sig = self.accounts.signatures(lease.id)
        return web.json_response(
            account.to_json()
            | {
                "consumer_signature": consumer_sig.hex(),
                "provider_signature": provider_sig.hex(),
                "running": len(account.running),
            }
        )


def _corrupt(result: JobResult) -> JobResult:
    """What a lying provider returns: the same run with a different stdout."""
    return replace(result, stdout=result.stdout + b"\n(forged)\n")


async def start_compute(
    slots: int,
    data_dir: Path,
    ledger: Ledger,
    *,
    verifier: RequestVerifier,
    lease_for: Callable[[int, ResourceClass], Awaitable[Lease]],
    clock: Callable[[], int],
    corrupt_results: bool = False,
    limits: PoolLimits | None = None,
) -> ComputeService:
    """A node's compute side: ``slots`` started workers (scratch under ``data_dir/compute``),
    the lease accounts (``data_dir/compute-accounts.sqlite3``), usage signed by ``ledger``'s
    account (the operator key)."""
    pool = ComputePool(slots, limits, scratch_root=data_dir / "compute")
    await pool.start()

    def sign(usage: Usage) -> bytes:
        return ledger.sign_usage(ResourceClass.COMPUTE, usage)

    if corrupt_results:
        log.warning("TESTING: this node forges every compute result (corrupt_results)")
    return ComputeService(
        pool=pool,
        accounts=ComputeAccounts(data_dir / "compute-accounts.sqlite3"),
        operator_key=bytes(ledger.account.key),
        usage_signer=UsageSigner(
            sign, ledger.conn.chain_id, ledger.module_of(ResourceClass.COMPUTE)
        ),
        verifier=verifier,
        lease_for=lease_for,
        clock=clock,
        corrupt_results=corrupt_results,
    )
