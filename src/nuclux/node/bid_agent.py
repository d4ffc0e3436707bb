"""The provider's bid agent: bids on the market's requests this node can serve.

Theory of operation
-------------------
A dedicated loop checks the chain's head every ``bid_poll`` seconds (0.15 by default: one
cheap ``eth_blockNumber``) and does its work only when the head moved (or every
``FULL_EVERY`` seconds on a chain that mines on demand): it reads the requests posted to
``AuctionHouse`` since it last looked (``requestCount`` and ``getRequest``; a fresh node looks
back at most ``scan_limit`` requests) and, for each one whose commit window is still open in
the next block:

1. skips it unless this node serves the class (storage: a store; compute: compute units;
   bandwidth is not served), is active in the registry with the registered capacity for
   ``units``, and is not draining;
2. asks the price policy (``nuclux.node.bid_agent_policy``: truthful cost per unit, or a
   bid script with a time limit and the cost as fallback); no bid when it says ``skip`` or
   the price is above the request's reserve;
3. under the lease agent's capacity lock, checks the free capacity (storage: the store's
   offered bytes less those reserved by leases and by pending bids; compute: the node's
   units less those of live and accepted compute leases and of pending bids) and records the
   bid, with a fresh ``os.urandom`` salt, *before* sending its commitment: the record is the
   reservation and survives a restart (``nuclux.node.bid_agent_state``);
4. commits: one transaction, the deposit drawn from the operator's standing allowance
   (approved once when the agent starts).

Every time the head moves it also moves each pending bid on, judging each step against the
next block (its number is the head's + 1; its time at least the head's): it reveals as soon
as the next block is past the commit window; once the reveals are over (the reveal window
passed, or every committed bid is revealed) it reads the outcome, finalising the request
itself if it was due a block ago and nobody did (the consumer finalises first; so a lazy
consumer cannot strand the deposits). A winner's ``WinnerLeased`` lease id is recorded
(``won``) and the lease agent answers that Ticketed lease at once (``LeaseAgent.
answer_ticket``), so the acceptance lands in the block after the finalisation; the
reservation is kept until it is accepted (``leased``) or declined. A lost bid, a failed
request or a bid whose reveal window passed unrevealed releases its reservation.

Each request has at most one step in flight: steps run as tasks, so the loop keeps watching
the head while a transaction waits for its block (``tick(wait=True)``, as tests call it,
waits for them). When a step ends the loop looks again at once rather than at the next
block (the head may have moved while it waited). A refusal by the contract (another party
moved first, a window closed) is logged and the bid re-read when the head moves; nothing is
sent twice for one state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nuclux.aio import first_of
from nuclux.chain.market_ledger import MarketLedger, RequestInfo, RequestStatus
from nuclux.core.auction import SALT_BYTES, commitment
from nuclux.core.lease import Lease, LeaseState
from nuclux.core.types import ResourceClass
from nuclux.errors import ChainError, ContractRevert, NucluxError, UsageError
from nuclux.node.bid_agent_policy import PricePolicy
from nuclux.node.bid_agent_state import BidBook, BidRecord

if TYPE_CHECKING:
    from nuclux.node.agent import LeaseAgent

log = logging.getLogger("nuclux.node.bids")

STORAGE, COMPUTE = ResourceClass.STORAGE, ResourceClass.COMPUTE
LIVE = (LeaseState.ACTIVE, LeaseState.ACTIVE_TICKETED)
_QUOTE_COUNTERS = {"script": "script_ok", "skip": "script_skip", "fallback": "script_failures"}
FULL_EVERY = 2.0  # seconds: look even when the head stands still (a chain that mines on demand)
DRAIN_TIMEOUT = 10.0  # seconds steps in flight get to finish when the agent stops


@dataclass
class BidAgent:
    agent: LeaseAgent  # the node's lease agent: owner, view, store, compute units, lock
    market: MarketLedger  # signs with the operator key
    book: BidBook
    policy: PricePolicy
    scan_limit: int = 64  # requests read per poll (and looked back on a fresh node)
    _head: int = field(default=0, init=False)  # the latest block seen, and its time
    _time: int = field(default=0, init=False)
    _steps: dict[int, asyncio.Task[None]] = field(default_factory=dict, init=False)
    _ready: bool = field(default=False, init=False)  # the standing allowance is in place
    _kick: asyncio.Event = field(default_factory=asyncio.Event, init=False)  # a step ended:
    # look again at once

    def __post_init__(self) -> None:
        self.agent.bids = self

    @property
    def owner(self) -> str:
        return self.agent.owner

    # ------------------------------------------------------------------ loop

    async def tick(self, *, wait: bool = True) -> None:
        """Read the head, start a step for every new request and pending bid that has one
        due, and (``wait``) wait for the steps to finish."""
        if not self._ready:
            await self.market.ensure_deposit_allowance()
            self._ready = True
        self._head, self._time = await self.market.head()
        await self._scan()
        for bid in self.book.holding():
            self._start(bid.request_id, self._advance(bid), f"bid ({bid.state})")
        if wait:
            await self.settle()

    async def settle(self) -> None:
        """Wait for every step in flight."""
        while self._steps:
            await asyncio.gather(*self._steps.values())

    async def run(self, stop: asyncio.Event, interval: float = 0.15) -> None:
        loop = asyncio.get_running_loop()
        last = -FULL_EVERY
        try:
            while not stop.is_set():
                head: int | None = None
                try:
                    head = await self.market.conn.block_number()
                    kicked = self._kick.is_set()
                    if head != self._head or kicked or loop.time() - last >= FULL_EVERY:
                        last = loop.time()
                        self._kick.clear()
                        await self.tick(wait=False)
                except NucluxError as exc:
                    head = None
                    self.book.count("errors")
                    log.warning("bid agent tick failed: %s", exc)
                await self._pause(stop, interval, beyond=head)
        finally:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.settle(), DRAIN_TIMEOUT)

    async def _pause(self, stop: asyncio.Event, interval: float, *, beyond: int | None) -> None:
        """Until the next look: ``interval`` seconds when the head is polled (or the last
        look failed: ``beyond`` None); when it is pushed (``nuclux.chain.heads``), until a
        head past ``beyond`` arrives (or ``FULL_EVERY`` passes), so a new block is acted on
        at once. A step ending (``_kick``), or ``stop``, ends it."""
        feed = self.market.conn.heads
        waits: list[Awaitable[object]] = [stop.wait(), self._kick.wait()]
        if beyond is not None and feed is not None and feed.live:
            waits.append(feed.wait_beyond(beyond, FULL_EVERY))
            interval = FULL_EVERY
        await first_of(waits, interval)

    def _start(self, rid: int, step: Coroutine[Any, Any, None], what: str) -> None:
        """Run ``step`` for request ``rid`` unless one is in flight for it already."""
        if rid in self._steps:
            step.close()
            return
        self._steps[rid] = asyncio.create_task(self._guarded(rid, step, what))

    async def _guarded(self, rid: int, step: Coroutine[Any, Any, None], what: str) -> None:
        try:
            await step
        except NucluxError as exc:
            self.book.count("errors")
            log.warning("%s on request %d: %s", what, rid, exc)
        except Exception:  # a step must never take the loop down (an RPC hiccup)
            self.book.count("errors")
            log.exception("%s on request %d failed", what, rid)
        finally:
            self._steps.pop(rid, None)
            # the head may have moved while this step waited for its block (a commit's
            # receipt comes with the block that closes a 1-block window): the next step of
            # this request must not wait for yet another block
            self._kick.set()

    # ------------------------------------------------------------------ new requests

    async def _scan(self) -> None:
        count = await self.market.request_count()
        cursor = self.book.cursor()
        if cursor is None:
            cursor = max(0, count - self.scan_limit)
        for rid in range(cursor + 1, min(count, cursor + self.scan_limit) + 1):
            try:
                info = await self.market.request(rid)
                if self.book.get(rid) is None:
                    self._start(rid, self._consider(info), "bid")
            except NucluxError as exc:
                self.book.count("errors")
                log.warning("request %d: %s", rid, exc)
            self.book.set_cursor(rid)

    def _serves(self, info: RequestInfo) -> str | None:
        """Why this node does not bid on ``info`` (None: it may)."""
        a = self.agent
        if info.status is not RequestStatus.OPEN:
            return "not open"
        if info.cls is STORAGE and a.store.capacity_bytes <= 0:
            return "no storage offered"
        if info.cls is COMPUTE and a.compute_units <= 0:
            return "no compute units offered"
        if info.cls not in (STORAGE, COMPUTE):
            return f"{info.cls.name.lower()} is not served"
        me = a.view.provider(self.owner)
        if me is None or me.status != "active":
            return "not active in the registry"
        if me.capacity[info.cls] < info.units:
            return f"{info.units} units exceed the registered capacity {me.capacity[info.cls]}"
        return None

    async def _consider(self, info: RequestInfo) -> None:
        if not info.commit_open(self._head + 1, self._time + 1):
            return  # the next block is past the commit window
        why = self._serves(info)
        if why is not None:
            log.debug("not bidding on request %d: %s", info.id, why)
            return
        if info.excluded and await self.market.is_excluded(info.id, self.owner):
            self.book.count("skipped_excluded")
            log.info("not bidding on request %d: its consumer excluded this provider", info.id)
            return
        quote = await self.policy.quote(info)
        counter = _QUOTE_COUNTERS.get(quote.source)
        if counter is not None:
            self.book.count(counter)
        if quote.price is None:
            return
        price = max(quote.price, 1)  # a cost of 0 bids the least a bid can be: 1 wei
        if price > info.reserve:
            self.book.count("skipped_reserve")
            log.info(
                "not bidding on request %d: %d wei per unit is above its reserve %d",
                info.id,
                price,
                info.reserve,
            )
            return
        salt = os.urandom(SALT_BYTES)
        async with self.agent.capacity_lock:
            short = await self.shortfall(info.cls, info.units)
            if short is not None:
                self.book.count("skipped_capacity")
                log.info("not bidding on request %d: %s", info.id, short)
                return
            record = BidRecord(
                info.id,
                info.cls,
                info.units,
                price,
                salt,
                "committing",
                info.commit_end,
                info.reveal_end,
                self._head,
                commit_end_block=info.commit_end_block,
                reveal_end_block=info.reveal_end_block,
            )
            self.book.add(record)  # the reservation, and the salt, before anything is sent
        await self._commit(record, info.reserve)

    async def shortfall(
        self, cls: ResourceClass, units: int, *, except_lease: int | None = None
    ) -> str | None:
        """Why ``units`` more of ``cls`` do not fit next to the leases and the pending bids
        (None: they fit). Call under ``capacity_lock``."""
        a = self.agent
        held = self.book.reserved(cls, except_lease=except_lease)
        if cls is STORAGE:
            cap = await a.store.capacity()
            free = cap.offered - cap.reserved - held * a.unit_bytes
            need = units * a.unit_bytes
            if need > free:
                return f"{need} bytes do not fit in the {max(free, 0)} free (after bids)"
            return None
        leases = [x for x in a.view.leases_of_provider(self.owner) if x.id != except_lease]
        used = a.compute.units_in_use(leases) + held
        if used + units > a.compute_units:
            return f"{units} compute units on top of {used} in use or bid exceed {a.compute_units}"
        return None

    async def _commit(self, bid: BidRecord, reserve: int) -> None:
        try:
            await self.market.commit_bid(
                bid.request_id, bid.price, bid.salt, provider=self.owner, reserve=reserve
            )
        except (ContractRevert, UsageError) as exc:  # refused before sending: nothing was sent
            self.book.set_state(bid.request_id, "dropped")
            self.book.count("errors")
            log.warning("bid on request %d refused: %s", bid.request_id, exc)
            return
        except ChainError as exc:  # it may have landed: the next poll reads the chain
            log.warning("bid on request %d: %s; will check the chain", bid.request_id, exc)
            return
        self.book.set_state(bid.request_id, "committed")
        self.book.count("committed")
        log.info("bid %d wei per unit on request %d", bid.price, bid.request_id)

    # ------------------------------------------------------------------ pending bids

    async def _advance(self, bid: BidRecord) -> None:
        """Move ``bid`` on. The next block is ``_head + 1`` at ``_time`` or later: a window
        closed for that time is closed for it (and this is how a node estimates gas)."""
        rid = bid.request_id
        after = self._head + 1
        if bid.state == "committing":
            on_chain = await self.market.bid(rid, self.owner)
            if on_chain.commitment and on_chain.commitment == self._sealed(bid):
                self.book.set_state(rid, "committed")
                self.book.count("committed")
            elif not bid.commit_open(self._head, self._time):  # it can no longer land
                self.book.set_state(rid, "dropped")
        elif bid.state == "committed" and not bid.commit_open(after, self._time):
            await self._reveal(bid)
        elif bid.state == "revealed":
            await self._outcome(bid, finalize=True)
        elif bid.state == "won" and bid.lease_id is not None:
            lease = self.agent.view.lease(bid.lease_id)
            if lease is not None and lease.state is not LeaseState.TICKETED:
                self.book.set_state(rid, "leased" if lease.state in LIVE else "declined")

    def _sealed(self, bid: BidRecord) -> bytes:
        return commitment(bid.price, bid.salt, self.owner, bid.request_id)

    async def _reveal(self, bid: BidRecord) -> None:
        rid = bid.request_id
        after = self._head + 1
        if bid.reveal_open(
            after, self._time
        ):  # it may still land (the block may keep the head's second)
            try:
                await self.market.reveal_bid(rid, bid.price, bid.salt, provider=self.owner)
            except ContractRevert as exc:
                log.warning("reveal on request %d refused: %s", rid, exc)
            else:
                self.book.set_state(rid, "revealed")
                self.book.count("revealed")
                log.info("revealed %d wei per unit on request %d", bid.price, rid)
                return
        on_chain = await self.market.bid(rid, self.owner)
        if on_chain.revealed:
            self.book.set_state(rid, "revealed")
            self.book.count("revealed")
        elif (
            not bid.reveal_open(after, self._time)
            or (await self.market.request(rid)).status is not RequestStatus.OPEN
        ):
            self.book.set_state(rid, "unrevealed")
            self.book.count("unrevealed")
            log.warning("request %d: the bid was never revealed (deposit forfeited)", rid)

    async def _outcome(self, bid: BidRecord, *, finalize: bool) -> None:
        """Read how request ``bid.request_id`` ended. Open still: with ``finalize``, finalise
        it if that could have landed in the latest block already (the consumer, or whoever
        is first, had its chance); a won lease is answered at once."""
        rid = bid.request_id
        info = await self.market.request(rid)
        if info.status is RequestStatus.OPEN:
            if not finalize or not info.can_finalize(self._head, self._time):
                return
            try:
                out = await self.market.finalize(rid)
            except ContractRevert as exc:  # someone else did, or the seed is not ready yet
                log.debug("finalise request %d: %s", rid, exc)
            else:
                if out.status is not RequestStatus.OPEN:
                    self.book.count("finalized")
                    log.info("finalised request %d", rid)
            info = await self.market.request(rid)
            if info.status is RequestStatus.OPEN:
                return
        current = self.book.get(rid)
        if current is None or current.state != "revealed":
            return  # read already (the lease agent asked while this step ran)
        if info.status is RequestStatus.FAILED:
            self.book.set_state(rid, "failed")
            self.book.count("failed_requests")
            return
        mine = [
            lease
            for who, lease in await self.market.winner_leases(rid, bid.from_block)
            if who.lower() == self.owner.lower()
        ]
        current = self.book.get(rid)
        if current is None or current.state != "revealed":
            return
        if not mine:
            self.book.set_state(rid, "lost")
            self.book.count("lost")
            return
        self.book.set_state(rid, "won", lease_id=int(mine[0]))
        self.book.count("won")
        log.info("won request %d at %d wei per unit: lease %d", rid, info.price, mine[0])
        if finalize:  # the loop's step (not the lease agent asking): accept in the next block
            await self.agent.answer_ticket(int(mine[0]))

    # ------------------------------------------------------------------ the lease agent's side

    async def link(self, lease: Lease) -> BidRecord | None:
        """The bid that won ``lease`` (a Ticketed lease of this provider), reading the
        outcome of revealed bids whose reveal window is over if the loop has not yet."""
        won = self.book.by_lease(lease.id)
        if won is not None:
            return won
        for bid in self.book.holding():
            if bid.state == "revealed" and bid.cls is lease.cls and bid.units == lease.units:
                await self._outcome(bid, finalize=False)
        return self.book.by_lease(lease.id)

    def answered(self, lease_id: int, accepted: bool) -> None:
        """The lease agent accepted (the reservation is now the lease) or declined."""
        bid = self.book.by_lease(lease_id)
        if bid is not None and bid.state == "won":
            self.book.set_state(bid.request_id, "leased" if accepted else "declined")
