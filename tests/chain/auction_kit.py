"""Helpers shared by the auction tests: market ledgers of the world's parties, salts, and
moving a request through its windows."""

from __future__ import annotations

from eth_utils.crypto import keccak

from nuclux.chain.ledger import Ledger
from nuclux.chain.market_ledger import MarketLedger
from tests.chain.world import PARAMS, World

DEPOSIT = PARAMS.auction_bid_deposit


def market(who: Ledger) -> MarketLedger:
    return MarketLedger(who.conn, who.deployment, who.account)


def salt(label: str) -> bytes:
    return keccak(text=f"salt/{label}")


async def after_commits(w: World, request_id: int) -> None:
    """Move chain time just past the commit window of ``request_id``."""
    info = await market(w.deployer).request(request_id)
    now = await w.conn.now()
    await w.conn.advance_time(max(0, info.commit_end - now) + 1)


async def after_reveals(w: World, request_id: int) -> None:
    """Move past the reveal window and mine until the seed block is readable."""
    m = market(w.deployer)
    info = await m.request(request_id)
    now = await w.conn.now()
    await w.conn.advance_time(max(0, info.reveal_end - now) + 1)
    while await w.conn.block_number() <= (await m.request(request_id)).seed_block:
        await w.conn.mine()
    # gas estimation runs against the latest block: one more so the seed block is behind it
    await w.conn.mine()


async def held(w: World) -> int:
    """NuxCoin the auction house holds."""
    return await w.deployer.balance(w.deployment.address("AuctionHouse"))
