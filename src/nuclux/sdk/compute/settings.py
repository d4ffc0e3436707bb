"""Tunables of the compute SDK, and the errors only it raises.

Every figure is a default a caller may override with ``ComputeSettings(...)``; tests use short
timeouts and small escrows, a user keeps the defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from nuclux.core.compute_account import charge
from nuclux.core.job import ComputeError
from nuclux.errors import NucluxError, UsageError


class NoMajority(ComputeError):
    """Replicas of a job disagreed and no strict majority formed within the bound."""

    def __init__(self, message: str, hashes: tuple[bytes, ...]) -> None:
        super().__init__(message)
        self.hashes = hashes


class NoComputeProviders(NucluxError):
    """Fewer usable compute providers than a job needs (active, with compute capacity,
    within the price cap, answering)."""

    exit_code: ClassVar[int] = 1


@dataclass(frozen=True, slots=True)
class ComputeSettings:
    """How the compute SDK leases slots, runs jobs and decides who failed."""

    replicas: int = 1  # providers a job runs on; >= 2 checks results by majority
    max_extra_replicas: int = 2  # more providers asked one at a time when there is no majority
    units: int = 2  # concurrent job slots a new lease reserves on its provider
    lease_days: float = 1.0  # term of a new lease
    escrow_jobs: int = 16  # a new lease's escrow: this many jobs at their fuel limit ...
    escrow_wei: int | None = None  # ... unless an explicit amount (wei) is given
    request_grace: float = 10.0  # seconds past the job's own timeout before its provider is dead
    call_timeout: float = 30.0  # an account read or a countersignature before the provider is dead
    accept_timeout: float = 60.0  # a new lease must be accepted by its provider within this
    poll_interval: float = 0.5  # while waiting for acceptance
    max_price: int | None = None  # wei per million fuel; None: any posted price
    max_providers: int = 8  # leases a map spreads over (at most)
    max_attempts: int = 6  # providers tried for one replica before the job fails
    directory_ttl: float = 30.0  # registry entries are reused this long
    journal_dir: Path | None = None  # jobs.jsonl files go here; None: kept in memory only
    # new leases through auctions (nuclux.sdk.market); False: at providers' posted prices
    use_market: bool = True

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise UsageError(f"replicas must be at least 1, not {self.replicas}")
        if self.max_extra_replicas < 0:
            raise UsageError("max_extra_replicas must be 0 or more")
        if self.units < 1 or self.escrow_jobs < 1 or self.max_providers < 1:
            raise UsageError("units, escrow_jobs and max_providers must be at least 1")
        if self.max_attempts < 1:
            raise UsageError("max_attempts must be at least 1")
        if self.escrow_wei is not None and self.escrow_wei <= 0:
            raise UsageError("escrow_wei must be a positive amount of wei")
        if self.max_price is not None and self.max_price < 0:
            raise UsageError("max_price must be a non-negative amount of wei per million fuel")
        if not (0 < self.lease_days < math.inf):
            raise UsageError(f"lease_days must be a positive number of days, not {self.lease_days}")
        for name in (
            "request_grace",
            "call_timeout",
            "accept_timeout",
            "poll_interval",
            "directory_ttl",
        ):
            if not getattr(self, name) > 0:
                raise UsageError(f"{name} must be positive")

    def escrow_for(self, fuel_limit: int, price: int) -> int:
        """A new lease's escrow (wei) for jobs of ``fuel_limit`` at ``price``."""
        if self.escrow_wei is not None:
            return max(self.escrow_wei, charge(fuel_limit, price), 1)
        return max(1, self.escrow_jobs * charge(fuel_limit, price))

    def epochs_for(self, epoch_length: int) -> int:
        return max(1, math.ceil(self.lease_days * 86_400 / epoch_length))
