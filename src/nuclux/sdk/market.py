"""The consumer's side of the market: new leases bought through sealed-bid auctions.

Theory of operation
-------------------
``Market.acquire(cls, units, m, term, reserve)`` posts one request for ``m`` providers
(locking ``m x units x term x reserve``), then follows it on chain, polling fast:

1. it waits out the commit window and the reveals (providers' bid agents commit and reveal),
   reading the request only when the head moves;
2. as soon as a finalisation can land in the next block (the reveal window is over, or the
   commit window is closed and every committed bid is revealed, and the tie-break seed block
   is behind it) it finalises the request itself unless someone did already (bid agents
   finalise a block later, as a fallback); a seed re-armed because its block was too old is
   simply waited for again;
3. a failed auction (fewer revealed bids than ``m_min``) raises ``AuctionFailed`` naming how
   many bids were revealed and how many were wanted; the contract has refunded the escrow
   and forfeited deposits by then, so nothing stays locked;
4. the winners' leases open Ticketed at the uniform clearing price; it waits for their
   providers to accept. A winner that does not accept in time loses its ticket: past the
   chain's acceptance deadline the ticket is expired (a fault for the provider), before it
   the ticket is cancelled; either way that lease's escrow comes back in full. A declined
   ticket is refunded by the provider's own transaction.

It returns the leases that are active: ``m`` of them when every winner accepted, fewer when
some did not (callers wanting more run another auction for the shortfall). On the embedded
EVM, which mines only when a transaction arrives, waiting mines a block per poll so chain time
moves on.

``default_reserve(cls)`` is what a consumer pays at most when it names no price:
``reserve_factor`` x the reference price when the market has one, else the highest posted
price of an active provider of the class. ``requests``, ``bids`` and ``prices`` are the reads
behind ``nuclux market``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from nuclux.chain import Ledger
from nuclux.chain.market_events import AuctionEvent, auction_events, cleared_auctions
from nuclux.chain.market_ledger import BidInfo, MarketLedger, RequestInfo, RequestStatus
from nuclux.core.auction import AuctionRequest
from nuclux.core.lease import Lease, LeaseState
from nuclux.core.market_price import ClearedAuction, reference_price
from nuclux.core.types import Address, LeaseId, ResourceClass, format_nux
from nuclux.errors import ChainError, ContractRevert, NucluxError, UsageError

LIVE = (LeaseState.ACTIVE, LeaseState.ACTIVE_TICKETED)
STALE_HEAD_S = 3.0  # a devnet head this old means nothing mines by itself: mine a block


class AuctionFailed(NucluxError):
    """An auction ended without enough revealed bids (everything was refunded)."""

    exit_code: ClassVar[int] = 1

    def __init__(self, message: str, request_id: int, revealed: int, wanted: int) -> None:
        super().__init__(message)
        self.request_id = request_id
        self.revealed = revealed
        self.wanted = wanted


@dataclass(frozen=True, slots=True)
class MarketSettings:
    poll_interval: float = 0.2  # chain reads while following a request
    accept_timeout: float = 120.0  # winners must accept their leases within this (seconds)
    reserve_factor: int = 2  # default reserve: this many times the reference price
    history_window: int = 64  # cleared auctions the reference price looks back over

    def __post_init__(self) -> None:
        if not self.poll_interval > 0 or not self.accept_timeout > 0:
            raise UsageError("poll_interval and accept_timeout must be positive")
        if self.reserve_factor < 1 or self.history_window < 1:
            raise UsageError("reserve_factor and history_window must be at least 1")


@dataclass(frozen=True, slots=True)
class Acquisition:
    """How one ``acquire`` went: the request, its clearing price, the leases that became
    active, and blocks and seconds from posting to the last acceptance seen."""

    request_id: int
    price: int
    leases: tuple[LeaseId, ...]
    lost: tuple[LeaseId, ...]  # winners' leases not accepted (refunded)
    blocks: int
    seconds: float


@dataclass(frozen=True, slots=True)
class PricePoint:
    block: int
    request_id: int
    price: int
    volume: int
    bidders: int
    restricted: bool = False  # its request barred providers: not counted for the reference


@dataclass(frozen=True, slots=True)
class PriceView:
    """A class's reference price (None without qualifying auctions) and its history."""

    cls: ResourceClass
    reference: int | None
    history: tuple[PricePoint, ...] = field(default=())


class Market:
    def __init__(self, ledger: Ledger, settings: MarketSettings | None = None) -> None:
        self.ledger = ledger
        self.settings = settings or MarketSettings()
        self.house = MarketLedger(ledger.conn, ledger.deployment, ledger.account)
        self.transactions = 0
        self.last: Acquisition | None = None
        self._lock = asyncio.Lock()  # one request at a time (permits share a nonce)
        self._can_mine = True  # a devnet: mine when its chain stands still

    # ------------------------------------------------------------------ buying

    async def acquire(
        self,
        cls: ResourceClass,
        units: int,
        m: int,
        term_epochs: int,
        reserve: int,
        m_min: int | None = None,
        exclude: Sequence[str] = (),
    ) -> list[Lease]:
        """Leases of ``units`` each over ``term_epochs`` from up to ``m`` providers (at least
        ``m_min``, default ``m``, must bid), at no more than ``reserve`` per unit; the
        providers in ``exclude`` may not bid (at most ``MAX_EXCLUDED``)."""
        loop = asyncio.get_running_loop()
        escrow = AuctionRequest(0, cls, units, term_epochs, m, reserve, m_min).escrow
        held = await self.ledger.balance()
        if held < escrow:
            raise UsageError(
                f"an auction for {m} x {units} units over {term_epochs} epochs at most {reserve}"
                f" wei per unit locks {format_nux(escrow)} NUX; this account holds"
                f" {format_nux(held)}: fund it, lower --max-price or ask for less"
            )
        async with self._lock:
            started = loop.time()
            first_block = await self.ledger.conn.block_number()
            rid = await self.house.post_request(
                cls, units, term_epochs, m, reserve, m_min=m_min, exclude=exclude
            )
            self.transactions += 1  # the post (a permit covers the escrow: no approval)
            info = await self._settle(rid)
        if info.status is RequestStatus.FAILED:
            wanted = info.m_min
            raise AuctionFailed(
                f"auction {rid} for {m} {cls.name.lower()} provider(s) at most {reserve} wei"
                f" per unit failed: {info.reveals} bid(s) revealed, {wanted} wanted at least"
                f" ({info.commits} committed); the escrow came back. Raise the reserve"
                " (--max-price) or ask for fewer providers",
                rid,
                info.reveals,
                wanted,
            )
        ids = await self._winners(rid, first_block)
        active, lost = await self._accepted(rid, ids, first_block)
        self.last = Acquisition(
            rid,
            info.price,
            tuple(x.id for x in active),
            tuple(lost),
            await self.ledger.conn.block_number() - first_block,
            loop.time() - started,
        )
        return active

    async def _settle(self, rid: int) -> RequestInfo:
        """Follow request ``rid`` until it is cleared or failed, finalising it when due: judged
        against the next block (the head's number + 1, at the head's time or later)."""
        seen = -1
        settled = False
        while True:
            head, now = await self.house.head()
            if head != seen:  # a request changes only with a block
                seen = head
                info = await self.house.request(rid)
                if info.status is not RequestStatus.OPEN:
                    return info
                if info.can_finalize(head + 1, now):
                    try:
                        await self.house.finalize(rid)
                        self.transactions += 1
                    except ContractRevert as err:
                        if err.error_name in ("RevealOpen", "SeedNotReady"):
                            await self._tick(fast=True)  # a chain that estimates on the head
                        elif (await self.house.request(rid)).status is RequestStatus.OPEN:
                            raise
                        # else a bid agent finalised it first
                    seen = -1
                    continue
                # nothing more can happen in this request but time passing: hurry the
                # embedded EVM
                settled = info.revealing_over(head + 1, now)
            await self._tick(fast=settled)

    async def _tick(self, *, fast: bool = False) -> None:
        """Wait one poll. A devnet that mines only on transactions (the embedded EVM, anvil
        without a block time) gets a block when its head is ``STALE_HEAD_S`` old, so chain time
        moves; the embedded one gets one at once when only time is awaited."""
        conn = self.ledger.conn
        if self._can_mine:
            try:
                stale = time.time() - await conn.now() >= STALE_HEAD_S
                if stale or (fast and conn.is_embedded):
                    await conn.mine()
            except ChainError:
                self._can_mine = False  # not a devnet: blocks come by themselves
        await asyncio.sleep(self.settings.poll_interval)

    async def _winners(self, rid: int, first_block: int) -> list[LeaseId]:
        events = await auction_events(self.house, first_block)
        return [
            LeaseId(int(e.args["leaseId"]))
            for e in events
            if e.name == "WinnerLeased" and e.request_id == rid
        ]

    async def _accepted(
        self, rid: int, ids: list[LeaseId], first_block: int
    ) -> tuple[list[Lease], list[LeaseId]]:
        """Wait for the winners to accept; a ticket declined or expired is replaced by the
        house with the next runner-up's (followed too, as ``WinnerReplaced`` says), and
        tickets still not accepted at ``accept_timeout`` are cancelled (refunded)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.accept_timeout
        pending = list(ids)
        done: dict[int, Lease | None] = {}
        while True:
            waiting = [i for i in pending if i not in done]
            now = await self.ledger.conn.now()
            failed: list[int] = []
            for lease in await asyncio.gather(*(self.ledger.lease(i) for i in waiting)):
                if lease.state in LIVE:
                    done[lease.id] = lease
                elif lease.state is not LeaseState.TICKETED:
                    done[lease.id] = None  # declined: refunded or replaced by the house
                    failed.append(lease.id)
                elif now > lease.deadline:
                    await self._refund(lease.id, expire=True)
                    done[lease.id] = None
                    failed.append(lease.id)
            if failed:
                replaced = await self._replacements(rid, first_block)
                pending.extend(LeaseId(replaced[f]) for f in failed if f in replaced)
            if all(i in done for i in pending) or loop.time() >= deadline:
                break
            await self._tick()
        for lid in pending:
            if lid not in done:
                await self._refund(lid, expire=False)
                done[lid] = None
        active = [x for x in (done[i] for i in pending) if x is not None]
        return active, [i for i in pending if done[i] is None]

    async def _replacements(self, rid: int, first_block: int) -> dict[int, int]:
        """failed winner's lease -> the runner-up's lease the house opened in its place."""
        return {
            int(e.args["failedLease"]): int(e.args["leaseId"])
            for e in await auction_events(self.house, first_block)
            if e.name == "WinnerReplaced" and e.request_id == rid
        }

    async def _refund(self, lid: LeaseId, *, expire: bool) -> None:
        try:
            if expire:
                await self.ledger.expire_ticket(lid)
            else:
                await self.ledger.cancel(lid)
            self.transactions += 1
        except ChainError:
            pass  # accepted or closed meanwhile

    async def default_reserve(self, cls: ResourceClass) -> int:
        """The reserve used when the consumer names none (see the module docstring)."""
        ref = (await self.prices(cls, history=False)).reference
        if ref is not None:
            return ref * self.settings.reserve_factor
        posted = [
            p.price[cls]
            for p in await self.ledger.providers()
            if p.status == "active" and p.capacity[cls] > 0 and p.price[cls] > 0
        ]
        if not posted:
            raise UsageError(
                f"the market has no reference price for {cls.name.lower()} yet and no active"
                " provider posts one: name the most you pay per unit (--max-price)"
            )
        return max(posted)

    # ------------------------------------------------------------------ reading

    async def requests(self, *, limit: int = 50) -> list[RequestInfo]:
        """The most recent requests (newest first), at most ``limit``."""
        count = await self.house.request_count()
        ids = range(count, max(0, count - limit), -1)
        return list(await asyncio.gather(*(self.house.request(i) for i in ids)))

    async def request(self, request_id: int) -> RequestInfo:
        return await self.house.request(request_id)

    async def bids(self, request_id: int) -> list[tuple[Address, BidInfo]]:
        """Every bid committed on ``request_id`` in commit order (prices once revealed)."""
        await self.house.request(request_id)  # UsageError for an unknown request
        who = await self.house.bidders(request_id)
        infos = await asyncio.gather(*(self.house.bid(request_id, a) for a in who))
        return list(zip(who, infos, strict=True))

    async def prices(self, cls: ResourceClass, *, history: bool = True) -> PriceView:
        """``cls``'s reference price from the ``AuctionCleared`` events, and its history."""
        events: list[AuctionEvent] = await auction_events(self.house)
        points = [
            (block, rid, rec) for block, rid, rec in cleared_auctions(events) if rec.cls == cls
        ]
        records: list[ClearedAuction] = [rec for _, _, rec in points]
        ref = reference_price(records, cls, window=self.settings.history_window)
        shown = tuple(
            PricePoint(block, rid, rec.price, rec.volume, rec.staked_bidders, rec.restricted)
            for block, rid, rec in points
        )
        return PriceView(cls, ref, shown if history else ())
