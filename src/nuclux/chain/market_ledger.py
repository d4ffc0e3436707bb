"""Domain methods for the market: post a request, commit and reveal sealed bids, finalise.

``MarketLedger(conn, deployment, account)`` speaks to ``AuctionHouse`` through the account's
``TxQueue``. The sealed form of a bid is ``nuclux.core.auction.commitment`` (the contract
computes the same bytes); the clearing the contract performs is
``nuclux.core.auction.clear`` over the revealed bids with the recorded seed, so anyone can
check an outcome with ``expected_clearing``. What a caller can see is wrong before sending
(a bid above the reserve, a salt of the wrong size, a request with too little escrow) is a
``UsageError`` and sends nothing; the contract's refusals are ``ContractRevert`` subclasses.

A window is open while chain time has not passed its end time *or* the block number its end
block (``RequestInfo.commit_open`` and friends mirror the contract), so callers can judge a
step against the next block before sending it; bids, reveals and finalisations are
estimated against the pending block, the one they are meant for (a node estimates against
the latest one by default, where a window that closes with it still looks open). An
operator's bid deposits are drawn from a standing allowance (``ensure_deposit_allowance``:
approved once, without limit), so a bid is one transaction. A consumer's request is one
transaction too: when its allowance is short of the escrow it signs an EIP-2612 permit for
exactly that escrow (``permit_escrow``), which ``postWithPermit`` applies before taking it, so
no allowance is left standing.

A request may exclude providers from bidding (``exclude``: at most ``MAX_EXCLUDED``, fixed
when it is posted); a restricted auction never counts for the reference price.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from eth_account.signers.local import LocalAccount
from web3.contract import AsyncContract
from web3.logs import DISCARD
from web3.types import TxParams, TxReceipt

from nuclux.chain.connection import ChainConnection
from nuclux.chain.deployment import Deployment
from nuclux.chain.eip712 import module_typed_data, sign_typed
from nuclux.chain.ledger_base import LedgerBase
from nuclux.chain.revert import decode_revert, revert_data_from_exception
from nuclux.chain.txqueue import GAS_MARGIN, GAS_PAD
from nuclux.core.auction import (
    SALT_BYTES,
    AuctionRequest,
    Bid,
    Clearing,
    clear,
    commitment,
)
from nuclux.core.market_price import ClearedAuction
from nuclux.core.types import Address, LeaseId, ResourceClass
from nuclux.errors import ChainError, TransactionError, UsageError

STANDING_ALLOWANCE = 2**256 - 1  # what bid deposits draw on (the house takes only the sender's)
MAX_EXCLUDED: Final = 64  # AuctionHouse.MAX_EXCLUDED
PERMIT_TTL: Final = 3600  # seconds of chain time an escrow permit stays valid
_PERMIT_FIELDS = [
    ("owner", "address"),
    ("spender", "address"),
    ("value", "uint256"),
    ("nonce", "uint256"),
    ("deadline", "uint256"),
]


class RequestStatus(enum.IntEnum):
    NONE = 0
    OPEN = 1
    CLEARED = 2
    FAILED = 3


def window_open(end: int, end_block: int, number: int, time: int) -> bool:
    """Whether a window ending at time ``end`` and block ``end_block`` is open in a block
    ``number`` at ``time``: until both have passed (as ``AuctionHouse``)."""
    return time <= end or number <= end_block


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """A request as the contract holds it."""

    id: int
    consumer: Address
    cls: ResourceClass
    m: int
    m_min: int
    status: RequestStatus
    commits: int
    reveals: int
    units: int
    term: int
    commit_end: int
    reveal_end: int
    seed_block: int
    reserve: int
    escrow: int
    price: int
    winners: int
    replacements: int = 0  # runners-up given a lease after a winner failed to accept
    commit_end_block: int = 0  # commits also while the block number is at most this
    reveal_end_block: int = 0  # reveals also while the block number is at most this
    excluded: int = 0  # providers the request bars from bidding (restricted auction)

    def commit_open(self, number: int, time: int) -> bool:
        """Whether a block ``number`` at ``time`` still takes commits."""
        return window_open(self.commit_end, self.commit_end_block, number, time)

    def reveal_open(self, number: int, time: int) -> bool:
        """Whether a block ``number`` at ``time`` takes reveals."""
        return not self.commit_open(number, time) and window_open(
            self.reveal_end, self.reveal_end_block, number, time
        )

    def revealing_over(self, number: int, time: int) -> bool:
        """Whether the reveals are over in a block ``number`` at ``time``: the reveal window
        has passed, or the commit window is closed and every committed bid is revealed."""
        if self.commit_open(number, time):
            return False
        return self.reveals == self.commits or not window_open(
            self.reveal_end, self.reveal_end_block, number, time
        )

    def can_finalize(self, number: int, time: int) -> bool:
        """Whether ``finalize`` succeeds in a block ``number`` at ``time`` (the seed block must
        be behind it unless the auction fails)."""
        if self.status is not RequestStatus.OPEN or not self.revealing_over(number, time):
            return False
        return self.reveals < self.m_min or number > self.seed_block

    def as_core(self) -> AuctionRequest:
        return AuctionRequest(
            self.id, self.cls, self.units, self.term, self.m, self.reserve, self.m_min
        )


@dataclass(frozen=True, slots=True)
class BidInfo:
    commitment: bytes
    depositor: Address
    price: int
    revealed: bool


@dataclass(frozen=True, slots=True)
class Outcome:
    """What ``finalize`` did: cleared (leases opened), failed (all refunded) or re-armed the
    seed (its block was too old to read; finalise again after ``seed_block``)."""

    request_id: int
    status: RequestStatus
    price: int
    leases: tuple[tuple[Address, LeaseId], ...]
    seed: bytes | None
    refund: int
    forfeited: int
    seed_block: int | None = None


def _request_from_raw(rid: int, raw: Any, reveal_blocks: int) -> RequestInfo:
    (consumer, cls, m, m_min, status, commits, reveals) = raw[:7]
    (units, term, commit_end, reveal_end, seed_block, commit_end_block) = raw[7:13]
    (reserve, escrow, price, winners, replacements, excluded) = raw[13:19]
    return RequestInfo(
        rid,
        Address(str(consumer)),
        ResourceClass(int(cls)),
        int(m),
        int(m_min),
        RequestStatus(int(status)),
        int(commits),
        int(reveals),
        int(units),
        int(term),
        int(commit_end),
        int(reveal_end),
        int(seed_block),
        int(reserve),
        int(escrow),
        int(price),
        int(winners),
        int(replacements),
        int(commit_end_block),
        int(commit_end_block) + reveal_blocks,
        int(excluded),
    )


class MarketLedger(LedgerBase):
    def __init__(
        self, conn: ChainConnection, deployment: Deployment, account: LocalAccount
    ) -> None:
        super().__init__(conn, deployment, account)
        self.auctions = conn.contract("AuctionHouse", deployment.address("AuctionHouse"))
        self._deposit: int | None = None  # immutables, read once
        self._reveal_blocks: int | None = None
        self._coin_name: str | None = None

    def for_account(self, account: LocalAccount) -> MarketLedger:
        return MarketLedger(self.conn, self.deployment, account)

    # ------------------------------------------------------------------ consumer

    async def post_request(
        self,
        cls: ResourceClass,
        units: int,
        term: int,
        m: int,
        reserve: int,
        *,
        m_min: int | None = None,
        escrow: int | None = None,
        exclude: Sequence[str] = (),
    ) -> int:
        """Post a request, locking ``escrow`` (default: exactly m x units x term x reserve),
        the providers in ``exclude`` barred from bidding; returns its id. One transaction: an
        allowance short of the escrow is covered by a permit signed here."""
        core = AuctionRequest(0, cls, units, term, m, reserve, m_min)  # checks the ranges
        amount = core.escrow if escrow is None else escrow
        if amount < core.escrow:
            raise UsageError(
                f"an escrow of {amount} wei is short of m x units x term x reserve = {core.escrow}"
            )
        barred = sorted({self._cs(a) for a in exclude})
        if len(barred) > MAX_EXCLUDED:
            raise UsageError(
                f"a request excludes at most {MAX_EXCLUDED} providers ({len(barred)} given)"
            )
        terms = (int(cls), units, term, m, core.minimum, reserve, amount)
        have = int(await self._call(self.coin, "allowance", self.address, self.auctions.address))
        args: list[Any] = [terms, barred]
        if have >= amount:
            fn = "post"
        else:
            deadline, v, r, sig_s = await self.permit_escrow(amount)
            fn = "postWithPermit"
            args += [deadline, v, r, sig_s]
        receipt = await self._send_next(self.auctions, fn, args, "post auction request")
        for ev in self.auctions.events.RequestPosted().process_receipt(receipt, errors=DISCARD):
            return int(ev["args"]["id"])
        raise ChainError("post auction request: no RequestPosted event in the receipt")

    async def permit_escrow(self, amount: int) -> tuple[int, int, bytes, bytes]:
        """An EIP-2612 permit letting the house take ``amount`` from this account: (deadline,
        v, r, s), valid for ``PERMIT_TTL`` seconds of chain time."""
        nonce = int(await self._call(self.coin, "nonces", self.address))
        if self._coin_name is None:  # the permit domain's name: immutable, read once
            self._coin_name = str(await self._call(self.coin, "name"))
        name = self._coin_name
        deadline = await self.conn.now() + PERMIT_TTL
        message = {
            "owner": self.address,
            "spender": self.auctions.address,
            "value": amount,
            "nonce": nonce,
            "deadline": deadline,
        }
        data = module_typed_data(
            name, "Permit", _PERMIT_FIELDS, message, self.conn.chain_id, self.coin.address
        )
        sig = sign_typed(self.account, data)
        return deadline, sig[64], sig[:32], sig[32:64]

    async def is_excluded(self, request_id: int, provider: str) -> bool:
        """Whether request ``request_id`` bars ``provider`` from bidding."""
        return bool(await self._call(self.auctions, "excluded", request_id, self._cs(provider)))

    # ------------------------------------------------------------------ providers

    async def bid_deposit(self) -> int:
        if self._deposit is None:
            self._deposit = int(await self._call(self.auctions, "bidDeposit"))
        return self._deposit

    async def ensure_deposit_allowance(self) -> None:
        """Approve the house once, without limit, when the allowance is below one deposit:
        the house only ever takes a deposit from the account sending a commit, so each later
        bid is a single transaction."""
        deposit = await self.bid_deposit()
        have = int(await self._call(self.coin, "allowance", self.address, self.auctions.address))
        if deposit and have < deposit:
            await self._send(
                self.coin,
                "approve",
                [self.auctions.address, STANDING_ALLOWANCE],
                "approve NuxCoin for bid deposits",
            )

    async def commit_bid(
        self,
        request_id: int,
        price: int,
        salt: bytes,
        provider: str | None = None,
        *,
        reserve: int | None = None,
    ) -> bytes:
        """Commit a sealed bid of ``price`` per unit for ``provider`` (default: this account;
        an operator bids for its provider), paying the deposit from the standing allowance.
        ``reserve``: the request's, when the caller has read it. Returns the commitment."""
        bidder = self._cs(provider or self.address)
        if len(salt) != SALT_BYTES:
            raise UsageError(f"a bid salt is {SALT_BYTES} random bytes (keep it to reveal)")
        if reserve is None:
            reserve = (await self.request(request_id)).reserve
        if not 1 <= price <= reserve:
            raise UsageError(
                f"a bid on request {request_id} is 1..{reserve} wei per unit (its reserve)"
            )
        sealed = commitment(price, salt, bidder, request_id)
        await self.ensure_deposit_allowance()
        await self._send_next(
            self.auctions, "commit", [request_id, bidder, sealed], f"bid on request {request_id}"
        )
        return sealed

    async def reveal_bid(
        self, request_id: int, price: int, salt: bytes, provider: str | None = None
    ) -> TxReceipt:
        bidder = self._cs(provider or self.address)
        if len(salt) != SALT_BYTES:
            raise UsageError(f"a bid salt is {SALT_BYTES} bytes")
        return await self._send_next(
            self.auctions,
            "reveal",
            [request_id, bidder, price, salt],
            f"reveal the bid on request {request_id}",
        )

    # ------------------------------------------------------------------ anyone

    async def finalize(self, request_id: int) -> Outcome:
        receipt = await self._send_next(
            self.auctions, "finalize", [request_id], f"finalise request {request_id}"
        )
        events = self.auctions.events
        for ev in events.AuctionFailed().process_receipt(receipt, errors=DISCARD):
            args = ev["args"]
            info = await self.request(request_id)
            forfeited = int(args["refund"]) - info.escrow
            return Outcome(
                request_id, RequestStatus.FAILED, 0, (), None, int(args["refund"]), forfeited
            )
        cleared = events.AuctionCleared().process_receipt(receipt, errors=DISCARD)
        if not cleared:
            for ev in events.SeedArmed().process_receipt(receipt, errors=DISCARD):
                return Outcome(
                    request_id, RequestStatus.OPEN, 0, (), None, 0, 0, int(ev["args"]["seedBlock"])
                )
            raise ChainError(f"finalise request {request_id}: no outcome in the receipt")
        leases = tuple(
            (Address(str(ev["args"]["provider"])), LeaseId(int(ev["args"]["leaseId"])))
            for ev in events.WinnerLeased().process_receipt(receipt, errors=DISCARD)
        )
        refunded = events.Refunded().process_receipt(receipt, errors=DISCARD)[0]["args"]
        c = cleared[0]["args"]
        return Outcome(
            request_id,
            RequestStatus.CLEARED,
            int(c["price"]),
            leases,
            bytes(c["seed"]),
            int(refunded["escrowRefund"]) + int(refunded["forfeitedDeposits"]),
            int(refunded["forfeitedDeposits"]),
        )

    async def _send_next(
        self, contract: AsyncContract, fn: str, args: list[Any], context: str
    ) -> TxReceipt:
        """Send, with gas estimated against the pending block (the embedded EVM, which mines
        each transaction at once, against its latest)."""
        tx: TxParams = {
            "from": self.address,
            "to": contract.address,
            "data": contract.encode_abi(fn, args=args),
        }
        try:
            if self.conn.is_embedded:
                gas = int(await self.conn.w3.eth.estimate_gas(tx))
            else:
                gas = int(await self.conn.w3.eth.estimate_gas(tx, "pending"))
        except Exception as exc:
            data = revert_data_from_exception(exc)
            if data is not None:
                raise decode_revert(data, context) from None
            raise TransactionError(f"{context}: gas estimation failed: {exc}") from exc
        tx["gas"] = int(gas * GAS_MARGIN) + GAS_PAD
        return await self.conn.queue(self.account).send(tx, context=context)

    # ------------------------------------------------------------------ reads

    async def reveal_blocks(self) -> int:
        if self._reveal_blocks is None:
            self._reveal_blocks = int(await self._call(self.auctions, "revealBlocks"))
        return self._reveal_blocks

    async def request(self, request_id: int) -> RequestInfo:
        raw = await self._call(self.auctions, "getRequest", request_id)
        info = _request_from_raw(request_id, raw, await self.reveal_blocks())
        if info.status is RequestStatus.NONE:
            raise UsageError(f"no auction request {request_id}")
        return info

    async def bid(self, request_id: int, provider: str) -> BidInfo:
        raw = await self._call(self.auctions, "getBid", request_id, self._cs(provider))
        return BidInfo(bytes(raw[0]), Address(str(raw[1])), int(raw[2]), bool(raw[3]))

    async def bidders(self, request_id: int) -> list[Address]:
        raw = await self._call(self.auctions, "bidders", request_id)
        return [Address(str(a)) for a in raw]

    async def winner_leases(
        self, request_id: int, from_block: int = 0
    ) -> list[tuple[Address, LeaseId]]:
        """The (provider, lease) pairs ``finalize`` opened for ``request_id`` (its
        ``WinnerLeased`` events from ``from_block`` on); empty before it cleared."""
        logs = await self.auctions.events.WinnerLeased().get_logs(
            argument_filters={"id": request_id}, from_block=from_block
        )
        return [
            (Address(str(ev["args"]["provider"])), LeaseId(int(ev["args"]["leaseId"])))
            for ev in logs
        ]

    async def runners_up(self, request_id: int) -> list[Address]:
        """The revealed bids of a cleared request that did not win, in rank order (at most
        m): who takes a failed winner's place, in turn."""
        raw = await self._call(self.auctions, "runnersUp", request_id)
        return [Address(str(a)) for a in raw]

    async def request_of_lease(self, lease_id: int) -> int | None:
        """The request a lease opened by the auction house came from (None: not one)."""
        rid = int(await self._call(self.auctions, "requestOfLease", lease_id))
        return rid or None

    async def recent_clearings(self, cls: ResourceClass) -> list[ClearedAuction]:
        """The qualifying clearings of ``cls`` the house keeps for the reference price,
        oldest first (the last ``REF_WINDOW``, each with ``REF_MIN_BIDDERS`` or more
        bidders; ``staked_bidders`` is that minimum: the contract keeps no count)."""
        prices, volumes = await self._call(self.auctions, "recentClearings", int(cls))
        least = int(await self._call(self.auctions, "REF_MIN_BIDDERS"))
        return [
            ClearedAuction(cls, int(p), int(v), least) for p, v in zip(prices, volumes, strict=True)
        ]

    async def reference_price(self, cls: ResourceClass) -> int | None:
        """The consensus reference price of ``cls`` kept on chain (wei per unit), or None
        while no qualifying auction has cleared: equal to
        ``nuclux.core.market_price.reference_price`` over the same clearings."""
        price, count = await self._call(self.auctions, "referencePrice", int(cls))
        return int(price) if int(count) and int(price) else None

    async def head(self) -> tuple[int, int]:
        """The latest block's number and timestamp (one read)."""
        block = await self.conn.block_head()
        if block is None:
            raise ChainError("the chain has no latest block")
        return block.number, block.timestamp

    async def request_count(self) -> int:
        return int(await self._call(self.auctions, "requestCount"))

    async def expected_clearing(self, request_id: int, seed: bytes) -> Clearing:
        """The pure core's clearing of the revealed bids of ``request_id`` under ``seed``:
        what ``finalize`` must have done (a check anyone can run)."""
        info = await self.request(request_id)
        bids = []
        for who in await self.bidders(request_id):
            b = await self.bid(request_id, who)
            if b.revealed:
                bids.append(Bid(who, b.price))
        return clear(info.as_core(), bids, seed)
