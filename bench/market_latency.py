"""End-to-end lease acquisition latency on anvil, for ``bench/market.py``.

A devnet with one-second blocks (``anvil --block-time 1``), auction windows counted in
blocks (``commit_blocks`` and ``reveal_blocks``; plus ``window`` seconds, 0 by default), the
seed taken from the first reveal's own block, and provider node processes running their bid
agents (``start_nodes``); a consumer buys one storage lease at a time with
``nuclux.sdk.market.Market.acquire`` (m = 1, every node bids its posted price). Per run:
blocks from the block holding the request to the block holding the winner's acceptance
(``LeaseAccepted``), and wall seconds from sending the request to ``acquire`` returning the
active lease.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from nuclux.chain import ChainConnection, Deployment, DeployParams, Ledger
from nuclux.chain.devnet import dev_account, devnet_down, devnet_up
from nuclux.chain.market_events import AuctionEvent, auction_events
from nuclux.core.types import ResourceClass
from nuclux.node.localnet import start_nodes, stop_nodes
from nuclux.sdk.market import Market, MarketSettings


async def lease_latency(
    runs: int, nodes: int, *, commit_blocks: int = 2, reveal_blocks: int = 2, window: int = 0
) -> dict[str, float | str]:
    with tempfile.TemporaryDirectory(prefix="nuclux-bench-market-") as tmp:
        state = Path(tmp)
        params = DeployParams(
            epoch_length=60,
            auction_commit_window=window,
            auction_reveal_window=window,
            auction_commit_blocks=commit_blocks,
            auction_reveal_blocks=reveal_blocks,
            auction_seed_delay=0,
        )
        info = await devnet_up(state, params=params, funded=2, block_time=1)
        try:
            # stores large enough that no node sits an auction out for want of room
            await start_nodes(state, nodes, poll=0.2, storage_bytes=64 << 30)
            async with await ChainConnection.open(info.rpc_url) as conn:
                dep = Deployment.load(state / "deployment.json")
                ledger = Ledger(conn, dep, dev_account(1))
                market = Market(ledger, MarketSettings(poll_interval=0.1, accept_timeout=60))
                blocks: list[int] = []
                seconds: list[float] = []
                steps: list[str] = []
                reserve = await market.default_reserve(ResourceClass.STORAGE)
                for _ in range(runs):
                    start = time.perf_counter()
                    leases = await market.acquire(ResourceClass.STORAGE, 1, 1, 10, reserve)
                    seconds.append(time.perf_counter() - start)
                    if market.last is None or len(leases) != 1:
                        raise RuntimeError(f"auction gave {len(leases)} leases, not 1")
                    rid = market.last.request_id
                    events = [e for e in await auction_events(market.house) if e.request_id == rid]
                    posted = next(e.block for e in events if e.name == "RequestPosted")
                    head = await conn.block_number()
                    accepted = [
                        e.block
                        for e in await ledger.registry_events(posted, head)
                        if e.name == "LeaseAccepted" and int(e.args["id"]) == leases[0].id
                    ]
                    blocks.append(accepted[0] - posted)
                    steps.append(_steps(events, posted, accepted[0]))
        finally:
            await stop_nodes(state)
            await devnet_down(state)
    return {
        "lease_blocks": float(statistics.median(blocks)),
        "lease_s": statistics.median(seconds),
        "lease_blocks_max": float(max(blocks)),
        "lease_window_s": float(window),
        "lease_commit_blocks": float(commit_blocks),
        "lease_reveal_blocks": float(reveal_blocks),
        "lease_blocks_runs": " ".join(str(b) for b in blocks),
        "lease_steps": " ".join(steps),
    }


def _steps(events: list[AuctionEvent], posted: int, accepted: int) -> str:
    """Where one run's blocks went, counted from the request's block: commits ``c``,
    reveals ``r``, the finalisation ``f``, the acceptance ``a`` (``c1,1,2r3,3,3f4a5``)."""
    marks = {"BidCommitted": "c", "BidRevealed": "r", "AuctionCleared": "f"}
    out = ""
    for mark in marks.values():
        offsets = [e.block - posted for e in events if marks.get(e.name) == mark]
        out += mark + ",".join(str(x) for x in offsets)
    return f"{out}a{accepted - posted}"
