"""Reading the AuctionHouse's history: requests posted, bids, clearings and failures.

``auction_events(market, first, last)`` returns every ``AuctionHouse`` event in a block range
in chain order (one ``eth_getLogs``; on the embedded EVM, a read of its receipts).
``cleared_auctions`` turns the ``AuctionCleared`` events into the records the pure reference
price (``nuclux.core.market_price``) is computed from: every bidder counted by the event had
registered with at least the minimum stake when it bid, so ``bidders`` is the number of
distinct staked bidders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nuclux.chain.logs import event_topics, tester_logs
from nuclux.chain.market_ledger import MarketLedger
from nuclux.core.market_price import ClearedAuction
from nuclux.core.types import ResourceClass


@dataclass(frozen=True, slots=True)
class AuctionEvent:
    name: str
    args: dict[str, Any]
    block: int
    log_index: int

    @property
    def request_id(self) -> int:
        return int(self.args["id"])


async def auction_events(
    market: MarketLedger, first: int | None = None, last: int | None = None
) -> list[AuctionEvent]:
    """Every AuctionHouse event from block ``first`` (default: the deployment's) to ``last``
    (default: the head), oldest first."""
    conn = market.conn
    start = market.deployment.block if first is None else first
    end = await conn.block_number() if last is None else last
    house = market.auctions
    logs: Sequence[Any]
    if conn.is_embedded:
        logs = tester_logs(conn, {house.address}, start, end)
    else:
        logs = await conn.w3.eth.get_logs(
            {"address": house.address, "fromBlock": start, "toBlock": end}
        )
    topics = event_topics(house)
    out: list[AuctionEvent] = []
    for log in logs:
        name = topics.get(bytes(log["topics"][0])) if log["topics"] else None
        if name is None:
            continue
        ev = house.events[name]().process_log(log)
        out.append(
            AuctionEvent(name, dict(ev["args"]), int(log["blockNumber"]), int(log["logIndex"]))
        )
    out.sort(key=lambda e: (e.block, e.log_index))
    return out


def cleared_auctions(events: Sequence[AuctionEvent]) -> list[tuple[int, int, ClearedAuction]]:
    """(block, request id, record) of every ``AuctionCleared`` event, oldest first."""
    return [
        (
            e.block,
            e.request_id,
            ClearedAuction(
                ResourceClass(int(e.args["cls"])),
                int(e.args["price"]),
                int(e.args["volume"]),
                int(e.args["bidders"]),
                bool(e.args.get("restricted", False)),
            ),
        )
        for e in events
        if e.name == "AuctionCleared"
    ]
