"""The provider's lease agent: answers tickets, keeps the store in step, collects earnings.

Theory of operation
-------------------
Each ``tick`` reads the local chain view (already synced by the follower) and acts on this
provider's leases:

- Ticketed storage lease: accept if the node is not draining and the store can reserve
  ``units`` more GiB within the capacity offered; otherwise decline (a decline is no fault,
  except of a ticket an auction opened: that is the missed-acceptance fault, and the ticket
  goes to the next bidder).
- Ticketed compute lease: accept if the node is not draining and the units of its live compute
  leases plus the ticket's fit in ``compute_units`` (``nuclux.node.compute_agent``); otherwise
  decline. Tickets of classes this node does not serve yet are declined.
- Capacity held by the bid agent's pending bids (``nuclux.node.bid_agent``) counts as used
  for every ticket, except the ticket a bid won: that bid's reservation becomes the lease.
  Checking and reserving happen under ``capacity_lock``, shared with the bid agent, so the
  two never promise the same bytes or units twice.
- Active storage lease: make sure the store reserves its quota. A pending extension of a
  storage or compute lease is accepted unless draining.
- Compute lease, live or in its dispute window: submit the latest usage both sides signed
  (``compute_accounts``) when it is newer than the chain's: while live at most every
  ``settle_every`` seconds, always once Closing (the window is the last chance).
- Closing, Closed or Failed lease: mark it closed in the store (its data is collected after
  the grace period); once its dispute window has passed, settle it (anyone may, and the money
  can only go to the parties).
- Storage proofs (``nuclux.node.prover``, when storage settles through StorageSettlement):
  seeds armed and recorded, sampled epochs and demands answered from the store, pay advanced.
- Every ``claim_every`` seconds, claim what active leases have earned.
- Garbage-collect the store at chain time.

Each transaction is attempted once per lease and state, so a slow chain never sees duplicates;
refusals (another party moved first) are logged and forgotten.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nuclux.aio import first_of
from nuclux.chain import Ledger
from nuclux.core.lease import Lease, LeaseState
from nuclux.core.types import ResourceClass
from nuclux.core.units import GIB
from nuclux.errors import ChainError, LeaseNotFound, NucluxError
from nuclux.node.compute.accounts import ComputeAccounts
from nuclux.node.compute_agent import ComputeAgent
from nuclux.node.follower import ChainView
from nuclux.node.prover import Prover
from nuclux.node.store import ShardStore

if TYPE_CHECKING:
    from nuclux.node.bid_agent import BidAgent

log = logging.getLogger("nuclux.node.agent")

LIVE = (LeaseState.ACTIVE, LeaseState.ACTIVE_TICKETED)
ENDED = (LeaseState.CLOSING, LeaseState.CLOSED, LeaseState.FAILED)


@dataclass
class AgentStats:
    accepted: int = 0
    declined: int = 0
    extensions: int = 0
    claimed_wei: int = 0
    settled: int = 0
    errors: int = 0


@dataclass
class LeaseAgent:
    owner: str
    ledger: Ledger  # signs with the operator key
    view: ChainView
    store: ShardStore
    unit_bytes: int = GIB
    claim_every: float = 300.0
    draining: bool = False
    prover: Prover | None = None
    compute_units: int = 0  # concurrent job slots offered (the daemon sets it from NodeConfig)
    compute_accounts: ComputeAccounts | None = None  # co-signed usage to settle
    settle_every: float = 60.0  # seconds between usage submissions of a live compute lease
    stats: AgentStats = field(default_factory=AgentStats)
    bids: BidAgent | None = None  # set by the bid agent when the node bids on the market
    capacity_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    compute: ComputeAgent = field(init=False)
    _done: set[tuple[int, str]] = field(default_factory=set)
    _last_claim: float = 0.0

    def __post_init__(self) -> None:
        self.compute = ComputeAgent(self.ledger)

    async def tick(self) -> None:
        me = self.view.provider(self.owner)
        self.draining = me is not None and me.status in ("paused", "leaving")
        c = self.compute
        c.units, c.accounts, c.settle_every = (
            self.compute_units,
            self.compute_accounts,
            self.settle_every,
        )
        leases = self.view.leases_of_provider(self.owner)
        for lease in leases:
            try:
                await self._handle(lease, leases)
            except NucluxError as exc:
                self.stats.errors += 1
                log.warning("lease %d (%s): %s", lease.id, lease.state.label, exc)
        if self.prover is not None:
            await self.prover.tick(leases)
        if time.monotonic() - self._last_claim >= self.claim_every:
            self._last_claim = time.monotonic()
            await self.claim_all(leases)
        await self.store.gc(self.view.chain_time)

    async def _once(self, lease: Lease, what: str) -> bool:
        key = (lease.id, what)
        if key in self._done:
            return False
        self._done.add(key)
        return True

    async def _handle(self, lease: Lease, leases: list[Lease]) -> None:
        s = lease.state
        served = lease.cls in (ResourceClass.STORAGE, ResourceClass.COMPUTE)
        if s is LeaseState.TICKETED and await self._once(lease, "answer"):
            await self._answer(lease, leases)
        elif s in LIVE:
            if lease.cls is ResourceClass.STORAGE:
                await self.store.ensure_lease(lease.id, lease.units * self.unit_bytes)
            if (
                s is LeaseState.ACTIVE_TICKETED
                and served
                and not self.draining
                and await self._once(lease, f"ext{lease.end_epoch}")
            ):
                await self.ledger.accept_extension(lease.id)
                self.stats.extensions += 1
        elif s in ENDED and lease.cls is ResourceClass.STORAGE and await self._once(lease, "close"):
            await self._close_in_store(lease)
        if lease.cls is ResourceClass.COMPUTE:
            if s in (LeaseState.CLOSED, LeaseState.FAILED):
                self.compute.forget(lease.id)
            else:
                await self.compute.settle(lease, self.view.chain_time)
        if (
            s is LeaseState.CLOSING
            and self.view.chain_time >= lease.deadline
            and await self._once(lease, "settle")
        ):
            await self.ledger.settle(lease.id)
            self.stats.settled += 1

    async def answer_ticket(self, lease_id: int) -> None:
        """Answer Ticketed lease ``lease_id`` now, read from the chain rather than the view:
        the bid agent calls this for the lease its bid just won, so the winner accepts in the
        block after the auction's finalisation. Each lease is answered once either way."""
        lease = await self.ledger.lease(lease_id)
        if lease.state is LeaseState.TICKETED and await self._once(lease, "answer"):
            await self._answer(lease, self.view.leases_of_provider(self.owner))

    async def _decline(self, lease: Lease, why: str) -> None:
        log.info("declining lease %d: %s", lease.id, why)
        await self.ledger.decline(lease.id)
        self.stats.declined += 1
        if self.bids is not None:
            self.bids.answered(lease.id, accepted=False)

    def _bid_units(self, cls: ResourceClass, lease_id: int) -> int:
        """Units of ``cls`` held by pending bids other than the one that won ``lease_id``."""
        if self.bids is None:
            return 0
        return self.bids.book.reserved(cls, except_lease=lease_id)

    async def _answer(self, lease: Lease, leases: list[Lease]) -> None:
        if self.bids is not None:
            await self.bids.link(lease)  # a won bid's reservation becomes this lease
        async with self.capacity_lock:
            if self.draining:
                await self._decline(lease, "draining")
            elif lease.cls is ResourceClass.STORAGE:
                await self._answer_storage(lease)
            elif lease.cls is ResourceClass.COMPUTE:
                await self._answer_compute(lease, leases)
            else:
                await self._decline(lease, f"{lease.cls.name.lower()} is not served yet")

    async def _answer_compute(self, lease: Lease, leases: list[Lease]) -> None:
        why = self.compute.refusal(lease, leases)
        held = self._bid_units(lease.cls, lease.id)
        if why is None and held:
            used = self.compute.units_in_use(x for x in leases if x.id != lease.id)
            if used + held + lease.units > self.compute_units:
                why = (
                    f"{lease.units} compute units on top of {used} in use and {held} held by "
                    f"pending bids exceed the {self.compute_units} this node offers"
                )
        if why is not None:
            await self._decline(lease, why)
            return
        self.compute.accepted(lease.id)  # counted before the view shows it live
        try:
            await self.ledger.accept(lease.id)
        except ChainError:
            self.compute.forget(lease.id)
            raise
        self._accepted(lease)

    def _accepted(self, lease: Lease) -> None:
        self.stats.accepted += 1
        if self.bids is not None:
            self.bids.answered(lease.id, accepted=True)
        log.info("accepted %s lease %d (%d units)", lease.cls.name.lower(), lease.id, lease.units)

    async def _answer_storage(self, lease: Lease) -> None:
        cap = await self.store.capacity()
        need = lease.units * self.unit_bytes
        held = self._bid_units(lease.cls, lease.id) * self.unit_bytes
        if cap.reserved + held + need > cap.offered:
            await self._decline(
                lease, f"{need} bytes would exceed the capacity offered ({held} held by bids)"
            )
            return
        await self.store.set_lease(lease.id, need, None)  # reserve before accepting
        try:
            await self.ledger.accept(lease.id)
        except ChainError:
            await self.store.close_lease(lease.id, self.view.chain_time)
            raise
        self._accepted(lease)

    async def _close_in_store(self, lease: Lease) -> None:
        try:
            await self.store.lease_usage(lease.id)
        except LeaseNotFound:
            return  # never stored anything
        await self.store.close_lease(lease.id, self.view.chain_time)

    async def claim_all(self, leases: list[Lease]) -> int:
        total = 0
        for lease in leases:
            if lease.state not in (*LIVE, LeaseState.CLOSING):
                continue
            try:
                now, _ = await self.ledger.claimable(lease.id)
                if now > 0:
                    total += await self.ledger.claim(lease.id)
            except NucluxError as exc:
                log.warning("claim on lease %d: %s", lease.id, exc)
        self.stats.claimed_wei += total
        return total

    async def run(self, stop: asyncio.Event, interval: float = 1.0) -> None:
        """Tick every ``interval`` seconds, and as soon as the chain view has read new blocks
        (a ticket to accept, an epoch to prove: the view reads each new block as its head is
        pushed, ``nuclux.chain.heads``)."""
        while not stop.is_set():
            moved = self.view.progress  # set by the view's next step that reads blocks
            try:
                await self.tick()
            except NucluxError as exc:
                self.stats.errors += 1
                log.warning("agent tick failed: %s", exc)
            await first_of((stop.wait(), moved.wait()), interval)
