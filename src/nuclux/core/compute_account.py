"""A compute lease's running account: what the provider may run and what it is owed.

Theory of operation
-------------------
A compute lease reserves ``units`` concurrent job slots on one provider at ``price`` wei per
million fuel, with ``escrow`` locked on chain. Jobs run under it without a transaction each:

1. ``admit(job, fuel_limit)`` before a job runs. Refused (nothing runs, nothing is owed) when
   the lease's slots are all running (``ComputeBusy``), when ``units`` finished jobs wait for
   the consumer's countersignature (``CountersignRequired``: a consumer that stops signing
   gets no more jobs), when the job could cost more than the escrow left
   (``EscrowExhausted``), or when the consumer has declined too many jobs
   (``TooManyDeclined``).
2. ``finish(job, fuel_used, deterministic)`` when it ended: the job is *pending*. ``abort``
   instead when it never ran (a rejected module costs nothing).
3. The consumer answers with a ``UsageUpdate``: the next revision, the pending jobs it pays
   and the ones it declines, and the cumulative total, signed as EIP-712
   ``Usage(leaseId, revision, cumulative)``. ``apply`` checks it against this account; the
   provider countersigns it, and the co-signed total is what it settles on chain.

Money is exact: the total is ``charge(fuel_paid, price) = fuel_paid * price // 10**6`` over the
fuel of every paid job together (so it equals fuel used x price to the wei, with one rounding
for the whole lease), it never decreases, and it never exceeds the escrow (``admit`` reserves
each running job's fuel limit). A consumer may decline only jobs run in the deterministic
profile (replicated jobs, where a majority outvoted this provider); the provider stops serving
a lease whose consumer declined more than ``1 / max_declined_share`` of its jobs (after
``declined_grace`` declines), so declining cannot become a way not to pay.

This module is pure: the node keeps one ``LeaseAccount`` per compute lease (and persists
``to_json``); the SDK uses ``UsageState`` and ``charge`` to build its updates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from nuclux.core.job import ComputeBusy, ComputeError
from nuclux.errors import UsageError

FUEL_PER_PRICE_UNIT: Final = 1_000_000
MAX_TOTAL: Final = 2**192 - 1
MAX_LISTED_JOBS: Final = 1024


class CountersignRequired(ComputeError):
    """Finished jobs wait for the consumer's countersignature; no more run until it comes."""


class EscrowExhausted(ComputeError):
    """The lease's escrow cannot cover the job's fuel limit on top of what is owed."""


class TooManyDeclined(ComputeError):
    """The consumer declined to pay for too many jobs on this lease; it gets no more."""


class UsageRejected(ComputeError):
    """A usage update does not match the provider's account (revision, jobs or total)."""


def charge(fuel: int, price: int) -> int:
    """Wei owed for ``fuel`` at ``price`` wei per million fuel (rounded down)."""
    if fuel < 0 or price < 0:
        raise UsageError("fuel and price are non-negative")
    return fuel * price // FUEL_PER_PRICE_UNIT


@dataclass(frozen=True, slots=True)
class UsageState:
    """The latest co-signed state of a lease (revision 0: nothing signed yet)."""

    revision: int = 0
    fuel_paid: int = 0
    cumulative: int = 0


@dataclass(frozen=True, slots=True)
class UsageUpdate:
    """The consumer's next revision: the pending jobs it pays and declines, and the total."""

    lease_id: int
    revision: int
    cumulative: int
    fuel_paid: int
    paid: tuple[bytes, ...]
    declined: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        if self.lease_id <= 0 or self.revision <= 0:
            raise UsageError("a usage update names a lease and a revision from 1")
        if not 0 <= self.cumulative <= MAX_TOTAL or self.fuel_paid < 0:
            raise UsageError("a usage total is a non-negative 192-bit amount")
        jobs = self.paid + self.declined
        if len(jobs) > MAX_LISTED_JOBS:
            raise UsageError(f"a usage update lists at most {MAX_LISTED_JOBS} jobs")
        if any(not isinstance(j, bytes) or len(j) != 32 for j in jobs):
            raise UsageError("job ids are 32 bytes")
        if len(set(jobs)) != len(jobs):
            raise UsageError("a job is listed twice in a usage update")

    def to_json(self) -> dict[str, Any]:
        return {
            "lease": str(self.lease_id),
            "revision": self.revision,
            "cumulative": str(self.cumulative),
            "fuel_paid": str(self.fuel_paid),
            "paid": [j.hex() for j in self.paid],
            "declined": [j.hex() for j in self.declined],
        }

    @classmethod
    def from_json(cls, body: Any) -> UsageUpdate:
        try:
            return cls(
                lease_id=int(body["lease"]),
                revision=int(body["revision"]),
                cumulative=int(body["cumulative"]),
                fuel_paid=int(body["fuel_paid"]),
                paid=tuple(bytes.fromhex(j) for j in body["paid"]),
                declined=tuple(bytes.fromhex(j) for j in body.get("declined", [])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"malformed usage update: {exc}") from None


@dataclass(frozen=True, slots=True)
class PendingJob:
    fuel_used: int
    deterministic: bool


@dataclass
class LeaseAccount:
    """The provider's account of one compute lease (see the module docstring)."""

    lease_id: int
    price: int
    units: int
    escrow: int
    state: UsageState = field(default_factory=UsageState)
    running: dict[bytes, int] = field(default_factory=dict)  # job id -> fuel limit
    pending: dict[bytes, PendingJob] = field(default_factory=dict)
    jobs_paid: int = 0
    jobs_declined: int = 0
    max_declined_share: int = 4
    declined_grace: int = 2

    def owed_at_most(self, extra_fuel: int = 0) -> int:
        """What the lease could owe if every running job used its whole limit."""
        fuel = (
            self.state.fuel_paid
            + sum(p.fuel_used for p in self.pending.values())
            + sum(self.running.values())
            + extra_fuel
        )
        return charge(fuel, self.price)

    def admit(self, job_id: bytes, fuel_limit: int) -> None:
        if fuel_limit < 0:
            raise UsageError(f"a job's fuel limit cannot be negative (got {fuel_limit})")
        if job_id in self.running or job_id in self.pending:
            raise ComputeError(f"job {job_id.hex()[:16]} already runs on lease {self.lease_id}")
        if self.jobs_declined > self.declined_grace and (
            self.jobs_declined * self.max_declined_share > self.jobs_paid + self.jobs_declined
        ):
            raise TooManyDeclined(
                f"the consumer declined {self.jobs_declined} of "
                f"{self.jobs_paid + self.jobs_declined} jobs on lease {self.lease_id}"
            )
        if len(self.pending) >= self.units:
            raise CountersignRequired(
                f"{len(self.pending)} finished jobs on lease {self.lease_id} await the "
                "consumer's countersignature"
            )
        if len(self.running) >= self.units:
            raise ComputeBusy(f"all {self.units} slots of lease {self.lease_id} are running jobs")
        need = self.owed_at_most(fuel_limit)
        if need > self.escrow:
            raise EscrowExhausted(
                f"lease {self.lease_id}: a job with fuel limit {fuel_limit} could bring the total "
                f"to {need} wei, above the escrow of {self.escrow} wei; top the lease up"
            )
        self.running[job_id] = fuel_limit

    def abort(self, job_id: bytes) -> None:
        """The job never ran: forget it, nothing is owed."""
        self.running.pop(job_id, None)

    def finish(self, job_id: bytes, fuel_used: int, deterministic: bool) -> None:
        limit = self.running.pop(job_id, None)
        if limit is None:
            raise ComputeError(f"job {job_id.hex()[:16]} is not running on lease {self.lease_id}")
        # a job is charged what it used, never more than its limit nor less than nothing
        self.pending[job_id] = PendingJob(max(0, min(fuel_used, limit)), deterministic)

    def expected_total(self, paid: tuple[bytes, ...]) -> tuple[int, int]:
        """(fuel_paid, cumulative) after paying ``paid`` (pending jobs)."""
        fuel = self.state.fuel_paid + sum(self.pending[j].fuel_used for j in paid)
        return fuel, charge(fuel, self.price)

    def check(self, update: UsageUpdate) -> None:
        """``UsageRejected`` unless ``update`` is the next revision this account agrees to."""
        if update.lease_id != self.lease_id:
            raise UsageRejected(f"the update is for lease {update.lease_id}, not {self.lease_id}")
        if update.revision != self.state.revision + 1:
            raise UsageRejected(
                f"lease {self.lease_id} is at revision {self.state.revision}; "
                f"the next is {self.state.revision + 1}, not {update.revision}"
            )
        unknown = [j for j in update.paid + update.declined if j not in self.pending]
        if unknown:
            raise UsageRejected(f"job {unknown[0].hex()[:16]} is not awaiting countersignature")
        if not update.paid and not update.declined:
            raise UsageRejected("a usage update pays or declines at least one job")
        bad = [j for j in update.declined if not self.pending[j].deterministic]
        if bad:
            raise UsageRejected(
                f"job {bad[0].hex()[:16]} ran without replication; it cannot be declined"
            )
        fuel, total = self.expected_total(update.paid)
        if (update.fuel_paid, update.cumulative) != (fuel, total):
            raise UsageRejected(
                f"lease {self.lease_id}: paying those jobs makes {fuel} fuel and {total} wei, "
                f"not {update.fuel_paid} fuel and {update.cumulative} wei"
            )

    def apply(self, update: UsageUpdate) -> UsageState:
        """Check ``update`` and make it the lease's state (after both signatures are good)."""
        self.check(update)
        for j in update.paid + update.declined:
            del self.pending[j]
        self.jobs_paid += len(update.paid)
        self.jobs_declined += len(update.declined)
        self.state = UsageState(update.revision, update.fuel_paid, update.cumulative)
        return self.state

    def to_json(self) -> dict[str, Any]:
        """Everything but running jobs (they do not survive a restart: nothing is owed)."""
        return {
            "lease": str(self.lease_id),
            "price": str(self.price),
            "units": self.units,
            "escrow": str(self.escrow),
            "revision": self.state.revision,
            "fuel_paid": str(self.state.fuel_paid),
            "cumulative": str(self.state.cumulative),
            "pending": [
                {"job": j.hex(), "fuel_used": str(p.fuel_used), "deterministic": p.deterministic}
                for j, p in self.pending.items()
            ],
            "jobs_paid": self.jobs_paid,
            "jobs_declined": self.jobs_declined,
        }

    @classmethod
    def from_json(cls, body: Any) -> LeaseAccount:
        try:
            return cls(
                lease_id=int(body["lease"]),
                price=int(body["price"]),
                units=int(body["units"]),
                escrow=int(body["escrow"]),
                state=UsageState(
                    int(body["revision"]), int(body["fuel_paid"]), int(body["cumulative"])
                ),
                pending={
                    bytes.fromhex(p["job"]): PendingJob(
                        int(p["fuel_used"]), bool(p["deterministic"])
                    )
                    for p in body["pending"]
                },
                jobs_paid=int(body["jobs_paid"]),
                jobs_declined=int(body["jobs_declined"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"malformed lease account: {exc}") from None
