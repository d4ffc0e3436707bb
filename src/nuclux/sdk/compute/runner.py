"""Running one job: on one provider or on replicas by majority, replacing providers that fail.

Theory of operation
-------------------
A *replica* (``_replica``) takes a slot on a lease of a provider the job has not used yet,
runs the spec there and checks the receipt (the provider's operator signed it, for this job,
lease, fuel and result hash). It moves on to another provider when this one fails:

- gone or hung (connection refused or reset, no answer within the job's timeout plus
  ``request_grace``), a broken or forged answer, the lease unknown to it, deregistered: the
  provider is retired (its lease cancelled, escrow recovered later) and never used again;
- busy (``ComputeBusy``), refusing this consumer (``TooManyDeclined``) or another refusal:
  skipped for this job only;
- ``EscrowExhausted``: the lease is topped up and the job sent again;
- ``CountersignRequired``: the node's account is read again and its pending jobs paid.

A module the sandbox rejects, or a bad request, is the buyer's problem: it ends the job.

``run_job`` asks ``replicas`` providers at once, then one more at a time while the answers
have no strict majority (``nuclux.core.replication``), up to ``max_extra_replicas`` more. The
verdict says whom to pay and whom to decline; every answer is countersigned before its slot is
freed (so a lease never holds more unpaid jobs than it has slots). A provider outvoted by the
majority loses that job's pay and its reputation with this consumer: it is retired like a
failed one (its lease cancelled), and the journal remembers it, so later clients of the
account do not lease from it again. Without a majority everyone who answered is paid and
``NoMajority`` lists the hashes seen.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

import aiohttp

from nuclux.core.compute_account import CountersignRequired, EscrowExhausted
from nuclux.core.job import (
    ComputeError,
    JobRejected,
    JobResult,
    JobSpec,
    Receipt,
    verify_receipt,
)
from nuclux.core.replication import decide, more_needed
from nuclux.errors import AuthError, IntegrityError, NucluxError, UsageError
from nuclux.sdk.compute.accounts import Accounts
from nuclux.sdk.compute.leases import ComputeLease, ComputeLeases
from nuclux.sdk.compute.settings import ComputeSettings, NoComputeProviders, NoMajority
from nuclux.sdk.peers import PEER_ERRORS

DEAD = (OSError, aiohttp.ClientError, TimeoutError, IntegrityError, AuthError)
"""Failures that retire a provider: gone, hung, or answering with what does not check."""


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """A finished job: the accepted result, who ran it, what was paid."""

    job_id: bytes
    result: JobResult
    providers: tuple[str, ...]  # paid: they returned the accepted result
    declined: tuple[str, ...]  # outvoted by the majority: not paid
    receipts: tuple[Receipt, ...]  # of the paid providers
    leases: tuple[int, ...]
    fuel_used: int  # paid fuel, all replicas together
    cost: int  # wei paid for this job, all replicas together

    @property
    def ok(self) -> bool:
        return self.result.ok

    def check(self) -> JobOutcome:
        """``self`` if the job exited 0, else ``JobFailed`` with its message."""
        self.result.check()
        return self


@dataclass(frozen=True, slots=True)
class _Answer:
    lease: ComputeLease
    result: JobResult
    receipt: Receipt


class Runner:
    def __init__(
        self, leases: ComputeLeases, accounts: Accounts, settings: ComputeSettings
    ) -> None:
        self.leases = leases
        self.accounts = accounts
        self.settings = settings

    async def run_job(
        self,
        spec: JobSpec,
        module: bytes,
        inputs: dict[str, bytes],
        *,
        replicas: int,
        max_price: int | None,
        on_provider: list[str] | None = None,
    ) -> JobOutcome:
        extra = self.settings.max_extra_replicas if replicas > 1 else 0
        if replicas > 1 and not spec.deterministic:
            raise UsageError("replicated jobs run in the deterministic profile")
        used: set[str] = set()
        answers: dict[str, _Answer] = {}
        try:
            while True:
                hashes = {p: a.result.result_hash for p, a in answers.items()}
                need = more_needed(hashes, replicas=replicas, max_extra=extra)
                if need == 0:
                    break
                got = await asyncio.gather(
                    *(self._replica(spec, module, inputs, used, max_price) for _ in range(need)),
                    return_exceptions=True,
                )
                for item in got:
                    if isinstance(item, _Answer):
                        answers[item.lease.provider] = item
                        if on_provider is not None:
                            on_provider.append(item.lease.provider)
                for item in got:
                    if isinstance(item, NoComputeProviders) and replicas > 1:
                        raise NoComputeProviders(
                            f"{replicas} replicas need as many distinct providers; only"
                            f" {len(answers)} answered ({item})"
                        ) from None
                    if isinstance(item, BaseException):
                        raise item
            hashes = {p: a.result.result_hash for p, a in answers.items()}
            verdict = decide(hashes, replicas=replicas, max_extra=extra)
            pay, decline = verdict.pay, verdict.decline
        except BaseException:
            pay, decline = tuple(answers), ()  # nobody was outvoted: everyone who ran is paid
            await self._settle(spec, answers, pay, decline)
            raise
        cost, fuel = await self._settle(spec, answers, pay, decline)
        for p in decline:  # outvoted: unpaid for this job, and this client's trust is gone
            await self._retire(answers[p].lease, "outvoted by the majority of its replicas")
        if verdict.accepted is None:
            seen = ", ".join(f"{h.hex()[:16]} x{n}" for h, n in verdict.counts)
            raise NoMajority(
                f"no strict majority among {len(answers)} replicas of job"
                f" {spec.job_id.hex()[:16]} (result hashes seen: {seen})",
                verdict.hashes,
            )
        winners = [answers[p] for p in pay]
        return JobOutcome(
            job_id=spec.job_id,
            result=winners[0].result,
            providers=tuple(a.lease.info.owner for a in winners),
            declined=tuple(answers[p].lease.info.owner for p in decline),
            receipts=tuple(a.receipt for a in winners),
            leases=tuple(a.lease.id for a in winners),
            fuel_used=fuel,
            cost=cost,
        )

    async def _settle(
        self,
        spec: JobSpec,
        answers: dict[str, _Answer],
        pay: tuple[str, ...],
        decline: tuple[str, ...],
    ) -> tuple[int, int]:
        """Countersign every answer (paid or declined), free its slot; (wei, fuel) paid."""

        async def one(provider: str) -> tuple[int, int]:
            a = answers[provider]
            try:
                if provider in pay:
                    fuel = a.receipt.fuel_used
                    paid = await self.accounts.settle(a.lease, {spec.job_id: fuel})
                    return paid.cost, fuel
                await self.accounts.settle(a.lease, {}, (spec.job_id,))
                return 0, 0
            except (*PEER_ERRORS, ValueError) as err:
                await self._retire(a.lease, f"countersigning failed: {_why(err)}")
                return 0, 0
            finally:
                await self.leases.release(a.lease)

        done = await asyncio.gather(*(one(p) for p in (*pay, *decline)))
        return sum(c for c, _ in done), sum(f for _, f in done)

    async def _replica(
        self,
        spec: JobSpec,
        module: bytes,
        inputs: dict[str, bytes],
        used: set[str],
        max_price: int | None,
    ) -> _Answer:
        """One replica's answer from a provider not in ``used`` (providers that fail are
        replaced, see the module docstring); the slot stays taken until settled."""
        timeout = spec.limits.timeout_ms / 1000 + self.settings.request_grace
        failures: list[str] = []
        for _ in range(self.settings.max_attempts):
            try:
                cl = await self.leases.take(used, fuel_limit=spec.limits.fuel, max_price=max_price)
            except NoComputeProviders as err:
                if failures:
                    raise NoComputeProviders(f"{err}; failures: {'; '.join(failures)}") from None
                raise
            used.add(cl.provider)
            for _ in range(2):  # once more after a top-up or paying pending jobs
                try:
                    await self.accounts.sync(cl)
                    result, receipt = await cl.node.run(
                        cl.id, spec, module, inputs, timeout=timeout
                    )
                    verify_receipt(receipt, cl.info.operator)
                    return _Answer(cl, result, receipt)
                except EscrowExhausted:
                    await self.leases.top_up(cl, spec.limits.fuel)
                except CountersignRequired:
                    self.accounts.forget(cl.id)
                except (JobRejected, UsageError):
                    await self.leases.release(cl)
                    raise
                except DEAD as err:
                    failures.append(f"{cl.provider[:10]}: {_why(err)}")
                    await self._retire(cl, _why(err))
                    await self.leases.release(cl)
                    break
                except NucluxError as err:  # busy, refusing this consumer, another refusal
                    failures.append(f"{cl.provider[:10]}: {_why(err)}")
                    await self.leases.release(cl)
                    break
                except BaseException:
                    await self.leases.release(cl)
                    raise
            else:
                failures.append(f"{cl.provider[:10]}: still refused after paying or topping up")
                await self.leases.release(cl)
        raise ComputeError(
            f"job {spec.job_id.hex()[:16]} failed on {len(failures)} providers: "
            + "; ".join(failures)
        )

    async def _retire(self, cl: ComputeLease, why: str) -> None:
        with contextlib.suppress(NucluxError):  # best effort: recover() settles what is left
            await self.leases.retire(cl, why, self.accounts.latest(cl.id))


def _why(err: BaseException) -> str:
    if isinstance(err, TimeoutError):
        return "no answer in time"
    return " ".join(str(err).split()) or type(err).__name__
