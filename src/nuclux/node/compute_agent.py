"""The lease agent's compute part: answering compute tickets and settling co-signed usage.

Theory of operation
-------------------
A compute lease reserves ``units`` concurrent job slots on this provider. The node offers
``compute_units`` slots in all, so a ticket is accepted only while the units of the live
compute leases (Active or ActiveTicketed in the chain view, plus the tickets accepted here
that the view has not caught up with) and the ticket's units fit; otherwise it is declined
with the reason logged. A node with no compute units declines every compute ticket.

Jobs run under a lease without a transaction each: the consumer countersigns cumulative
totals (``nuclux.core.compute_account``) and the node's ``ComputeAccounts`` keeps the latest
co-signed ``Usage(leaseId, revision, cumulative)`` with both signatures. The provider is paid
only for what reaches ``CumulativeSettlement``, so ``settle`` submits the latest co-signed
state whenever its revision is newer than the one on chain:

- while the lease is live, at most every ``settle_every`` seconds per lease (the provider is
  paid as it goes; the agent's claims then pay out);
- always once the lease is Closing and its dispute window is open: the window is the last
  chance to submit, after it the lease settles on what the chain holds.

The revision on chain is read once per lease (``latest_usage``) and then remembered. A
refused submission (the consumer submitted that revision or a later one first, or the window
closed) is logged and remembered as done, so it is not retried until a newer revision is
co-signed; a transaction that failed for another reason is retried on a later tick.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from nuclux.chain import Ledger
from nuclux.core.lease import Lease, LeaseState
from nuclux.core.types import ResourceClass
from nuclux.errors import ContractRevert
from nuclux.node.compute.accounts import ComputeAccounts

log = logging.getLogger("nuclux.node.agent")

COMPUTE = ResourceClass.COMPUTE
LIVE = (LeaseState.ACTIVE, LeaseState.ACTIVE_TICKETED)


@dataclass
class ComputeSettleStats:
    submitted: int = 0
    refused: int = 0


@dataclass
class ComputeAgent:
    """Compute tickets and usage settlement for one provider (driven by ``LeaseAgent``)."""

    ledger: Ledger  # signs with the operator key
    units: int = 0
    accounts: ComputeAccounts | None = None
    settle_every: float = 60.0
    clock: Callable[[], float] = time.monotonic
    stats: ComputeSettleStats = field(default_factory=ComputeSettleStats)
    _accepted: set[int] = field(default_factory=set)  # tickets accepted here
    _on_chain: dict[int, int] = field(default_factory=dict)  # lease -> revision submitted
    _last_submit: dict[int, float] = field(default_factory=dict)

    # ------------------------------------------------------------------ tickets

    def units_in_use(self, leases: Iterable[Lease]) -> int:
        """Units of the live compute leases, counting tickets accepted but not yet seen live."""
        return sum(
            lease.units
            for lease in leases
            if lease.cls is COMPUTE
            and (
                lease.state in LIVE
                or (lease.state is LeaseState.TICKETED and lease.id in self._accepted)
            )
        )

    def refusal(self, ticket: Lease, leases: Iterable[Lease]) -> str | None:
        """Why ``ticket`` cannot be served (None: it fits in the node's compute units)."""
        if self.units <= 0:
            return "this node offers no compute units"
        used = self.units_in_use(lease for lease in leases if lease.id != ticket.id)
        if used + ticket.units > self.units:
            return (
                f"{ticket.units} compute units on top of the {used} in use exceed the "
                f"{self.units} this node offers"
            )
        return None

    def accepted(self, lease_id: int) -> None:
        """Count an accepted ticket until the chain view shows it live."""
        self._accepted.add(lease_id)

    # ------------------------------------------------------------------ settlement

    def wants_settlement(self, lease: Lease, chain_time: int) -> bool:
        if lease.cls is not COMPUTE or self.accounts is None:
            return False
        if lease.state is LeaseState.CLOSING:
            return chain_time < lease.deadline
        return lease.state in LIVE

    async def settle(self, lease: Lease, chain_time: int) -> bool:
        """Submit the lease's latest co-signed usage if it is newer than the chain's and it is
        time to (see the module docstring). True if a submission was confirmed."""
        if self.accounts is None or not self.wants_settlement(lease, chain_time):
            return False
        latest = self.accounts.cosigned(lease.id)
        if latest is None:
            return False
        usage = latest.usage
        on_chain = self._on_chain.get(lease.id)
        if on_chain is None:
            on_chain, _ = await self.ledger.latest_usage(COMPUTE, lease.id)
            self._on_chain[lease.id] = on_chain
        if usage.revision <= on_chain:
            return False
        closing = lease.state is LeaseState.CLOSING
        now = self.clock()
        last = self._last_submit.get(lease.id)
        if not closing and last is not None and now - last < self.settle_every:
            return False
        self._last_submit[lease.id] = now
        try:
            await self.ledger.submit_usage(
                COMPUTE, usage, latest.consumer_signature, latest.provider_signature
            )
        except ContractRevert as exc:
            self._on_chain[lease.id] = usage.revision  # not retried until a newer revision
            self.stats.refused += 1
            log.warning(
                "lease %d: usage revision %d (%d wei) refused: %s",
                lease.id,
                usage.revision,
                usage.cumulative,
                exc,
            )
            return False
        self._on_chain[lease.id] = usage.revision
        self.stats.submitted += 1
        log.info(
            "lease %d: submitted usage revision %d (%d wei)",
            lease.id,
            usage.revision,
            usage.cumulative,
        )
        return True

    def forget(self, lease_id: int) -> None:
        """The lease is over: drop what was remembered about it."""
        self._accepted.discard(lease_id)
        self._on_chain.pop(lease_id, None)
        self._last_submit.pop(lease_id, None)
