"""The provider's bid agent: bids on the market's requests this node can serve.

Theory of operation
-------------------
A dedicated loop (every ``bid_poll`` seconds, 0.5 by default, so it reacts within a block)
reads the requests posted to ``AuctionHouse`` since it last looked (``requestCount`` and
``getRequest``; a fresh node looks back at most ``scan_limit`` requests) and, for each one
still in its commit window:

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
4. commits (the operator pays the bid deposit).

Every poll it also moves each pending bid on: reveals as soon as chain time is past the
commit window; after the reveal window finalises the request if nobody has (so a lazy
consumer cannot strand the deposits), then reads the outcome: a winner's ``WinnerLeased``
lease id is recorded (``won``) and its reservation kept until the lease agent accepts the
Ticketed lease (``leased``) or declines it; a lost bid, a failed request or a bid whose
reveal window passed unrevealed releases its reservation. A refusal by the contract (another
party moved first, a window closed) is logged and the bid re-read on the next poll; nothing
is sent twice for one state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

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


@dataclass
class BidAgent:
    agent: LeaseAgent  # the node's lease agent: owner, view, store, compute units, lock
    market: MarketLedger  # signs with the operator key
    book: BidBook
    policy: PricePolicy
    scan_limit: int = 64  # requests read per poll (and looked back on a fresh node)
    _head: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.agent.bids = self

    @property
    def owner(self) -> str:
        return self.agent.owner

    # ------------------------------------------------------------------ loop

    async def tick(self) -> None:
        conn = self.market.conn
        now = await conn.now()
        self._head = await conn.block_number()
        await self._scan(now)
        for bid in self.book.holding():
            try:
                await self._advance(bid, now)
            except NucluxError as exc:
                self.book.count("errors")
                log.warning("bid on request %d (%s): %s", bid.request_id, bid.state, exc)

    async def run(self, stop: asyncio.Event, interval: float = 0.5) -> None:
        while not stop.is_set():
            try:
                await self.tick()
            except NucluxError as exc:
                self.book.count("errors")
                log.warning("bid agent tick failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=interval)

    # ------------------------------------------------------------------ new requests

    async def _scan(self, now: int) -> None:
        count = await self.market.request_count()
        cursor = self.book.cursor()
        if cursor is None:
            cursor = max(0, count - self.scan_limit)
        for rid in range(cursor + 1, min(count, cursor + self.scan_limit) + 1):
            try:
                info = await self.market.request(rid)
                if self.book.get(rid) is None:
                    await self._consider(info, now)
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

    async def _consider(self, info: RequestInfo, now: int) -> None:
        if now >= info.commit_end:
            return  # the next block is past the commit window
        why = self._serves(info)
        if why is not None:
            log.debug("not bidding on request %d: %s", info.id, why)
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
            )
            self.book.add(record)  # the reservation, and the salt, before anything is sent
        await self._commit(record)

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

    async def _commit(self, bid: BidRecord) -> None:
        try:
            await self.market.commit_bid(bid.request_id, bid.price, bid.salt, provider=self.owner)
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

    async def _advance(self, bid: BidRecord, now: int) -> None:
        rid = bid.request_id
        if bid.state == "committing":
            on_chain = await self.market.bid(rid, self.owner)
            if on_chain.commitment and on_chain.commitment == self._sealed(bid):
                self.book.set_state(rid, "committed")
                self.book.count("committed")
            elif now >= bid.commit_end:
                self.book.set_state(rid, "dropped")
        elif bid.state == "committed" and now > bid.commit_end:
            await self._reveal(bid, now)
        elif bid.state == "revealed" and now > bid.reveal_end:
            await self._outcome(bid, finalize=True)
        elif bid.state == "won" and bid.lease_id is not None:
            lease = self.agent.view.lease(bid.lease_id)
            if lease is not None and lease.state is not LeaseState.TICKETED:
                self.book.set_state(rid, "leased" if lease.state in LIVE else "declined")

    def _sealed(self, bid: BidRecord) -> bytes:
        return commitment(bid.price, bid.salt, self.owner, bid.request_id)

    async def _reveal(self, bid: BidRecord, now: int) -> None:
        rid = bid.request_id
        if now <= bid.reveal_end:
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
        elif now > bid.reveal_end or (await self.market.request(rid)).status is not (
            RequestStatus.OPEN
        ):
            self.book.set_state(rid, "unrevealed")
            self.book.count("unrevealed")
            log.warning("request %d: the bid was never revealed (deposit forfeited)", rid)

    async def _outcome(self, bid: BidRecord, *, finalize: bool) -> None:
        rid = bid.request_id
        info = await self.market.request(rid)
        if info.status is RequestStatus.OPEN:
            if not finalize:
                return
            try:
                out = await self.market.finalize(rid)
            except ContractRevert as exc:  # someone else did, or the seed is not ready yet
                log.debug("finalise request %d: %s", rid, exc)
                info = await self.market.request(rid)
            else:
                if out.status is not RequestStatus.OPEN:
                    self.book.count("finalized")
                    log.info("finalised request %d", rid)
                info = await self.market.request(rid)
        if info.status is RequestStatus.FAILED:
            self.book.set_state(rid, "failed")
            self.book.count("failed_requests")
        elif info.status is RequestStatus.CLEARED:
            mine = [
                lease
                for who, lease in await self.market.winner_leases(rid, bid.from_block)
                if who.lower() == self.owner.lower()
            ]
            if mine:
                self.book.set_state(rid, "won", lease_id=int(mine[0]))
                self.book.count("won")
                log.info("won request %d at %d wei per unit: lease %d", rid, info.price, mine[0])
            else:
                self.book.set_state(rid, "lost")
                self.book.count("lost")

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
