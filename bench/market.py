"""The market's figures, as ``name=value`` lines.

    .venv/bin/python bench/market.py [--bids 10000] [--runs 9]

``clear_10k_ms``: the median time of clearing one request (m = 16) over 10,000 revealed bids
with random prices and distinct bidders in the pure core (``nuclux.core.auction.clear``),
bids built beforehand; ``clear_10k_tied_ms`` the same when every bid has the same price (the
worst case: every bid's tie-break key is hashed). Goal: ``clear_10k_ms <= 100``.

``gas_auction_m1``, ``_m8``, ``_m16``: the gas of every transaction of one auction on the
embedded EVM (``AuctionHouse``) with m winners and m + 1 bidders: the consumer's request
(one transaction: its escrow allowed by an EIP-2612 permit), each bidder's approval (its
first bid only: bid agents keep a standing deposit allowance), commit and reveal, and the
finalisation that opens the m leases; ``gas_auction_finalize_mN`` the finalisation alone.

``lease_blocks`` and ``lease_s`` (``bench/market_latency.py``): the median, over
``--lease-runs`` auctions, of the time from posting a request to an accepted (Active) lease
on anvil with one-second blocks, commit and reveal windows of ``--lease-commit-blocks`` and
``--lease-reveal-blocks`` blocks (and ``--lease-window`` seconds, 0 by default) and
``--lease-nodes`` node processes bidding through their bid agents; in blocks and seconds.
Goal: ``lease_blocks <= 6``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import time

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.crypto import keccak

from bench.market_latency import lease_latency
from nuclux.chain import ChainConnection, DeployParams, Ledger, deploy
from nuclux.chain.ledger import ProviderOffer
from nuclux.chain.market_ledger import MarketLedger
from nuclux.core.auction import AuctionRequest, Bid, clear
from nuclux.core.auth import to_address
from nuclux.core.types import ONE_NUX, ResourceClass

GOALS = {"clear_10k_ms": (100.0, "<="), "lease_blocks": (6.0, "<=")}


def emit(name: str, value: object) -> None:
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    print(f"{name}={text}", flush=True)


def time_clearing(request: AuctionRequest, bids: list[Bid], runs: int) -> float:
    seed = bytes(range(32))
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        clear(request, bids, seed)
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def key(label: str) -> LocalAccount:
    acct: LocalAccount = Account.from_key(keccak(text=f"nuclux-bench/market/{label}"))
    return acct


async def auction_gas(sizes: list[int]) -> dict[str, int]:
    """Gas of whole auctions with m winners and m + 1 bidders, on the embedded EVM."""
    out: dict[str, int] = {}
    conn = await ChainConnection.open("embedded")
    try:
        d = key("deployer")
        await conn.fund_gas(d.address, 10**21)
        params = DeployParams(epoch_length=60)
        dep = await deploy(conn, d, params)
        bank = Ledger(conn, dep, d)
        consumer = MarketLedger(conn, dep, key("consumer"))
        await conn.fund_gas(consumer.address, 10**21)
        await bank.transfer(consumer.address, 100_000 * ONE_NUX)
        providers: list[MarketLedger] = []
        for i in range(max(sizes) + 1):
            p = bank.for_account(key(f"provider{i}"))
            await conn.fund_gas(p.address, 10**20)
            await bank.transfer(p.address, 1_000 * ONE_NUX)
            offer = ProviderOffer(
                f"https://127.0.0.1:{9000 + i}",
                keccak(text=f"cert{i}"),
                keccak(text=f"x{i}"),
                (10**6, 10**6, 10**6),
                (10**12, 10**12, 10**12),
            )
            await p.register_provider(offer, params.min_stake)
            providers.append(MarketLedger(conn, dep, p.account))
        rng = random.Random(2)
        for m in sizes:
            first = await conn.block_number()
            rid = await consumer.post_request(ResourceClass.STORAGE, 100, 24, m, 10**15)
            bids = [
                (b, rng.randrange(10**13, 10**15), rng.randbytes(32)) for b in providers[: m + 1]
            ]
            for b, price, salt in bids:
                await b.commit_bid(rid, price, salt)
            await conn.advance_time(params.auction_commit_window + 1)
            for b, price, salt in bids:
                await b.reveal_bid(rid, price, salt)
            await conn.advance_time(params.auction_reveal_window + 1)
            for _ in range(params.auction_seed_delay + 1):
                await conn.mine()
            receipt = await consumer._send(consumer.auctions, "finalize", [rid], "finalize")
            last = await conn.block_number()
            out[f"gas_auction_m{m}"] = await conn.gas_used(first + 1, last)
            out[f"gas_auction_finalize_m{m}"] = int(receipt["gasUsed"])
    finally:
        await conn.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bids", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--no-gas", action="store_true", help="skip the on-chain figures")
    parser.add_argument("--no-lease", action="store_true", help="skip the anvil latency")
    parser.add_argument("--lease-runs", type=int, default=5)
    parser.add_argument("--lease-window", type=int, default=0)
    parser.add_argument("--lease-commit-blocks", type=int, default=2)
    parser.add_argument("--lease-reveal-blocks", type=int, default=2)
    parser.add_argument("--lease-nodes", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(1)
    reserve = 10**18
    bidders = [to_address(rng.randbytes(20)) for _ in range(args.bids)]
    bids = [Bid(b, rng.randrange(1, 2 * reserve)) for b in bidders]
    tied = [Bid(b, reserve // 2) for b in bidders]
    request = AuctionRequest(1, ResourceClass.STORAGE, units=100, term=24, m=16, reserve=reserve)
    emit("load_avg_1min", os.getloadavg()[0])
    figures = {
        "clear_10k_ms": time_clearing(request, bids, args.runs),
        "clear_10k_tied_ms": time_clearing(request, tied, args.runs),
    }
    for name, value in figures.items():
        emit(name, value)
    if not args.no_gas:
        for name, gas in asyncio.run(auction_gas([1, 8, 16])).items():
            emit(name, gas)
    if not args.no_lease:
        latency = asyncio.run(
            lease_latency(
                args.lease_runs,
                args.lease_nodes,
                commit_blocks=args.lease_commit_blocks,
                reveal_blocks=args.lease_reveal_blocks,
                window=args.lease_window,
            )
        )
        for name, shown in latency.items():
            emit(name, shown)
        figures.update({k: v for k, v in latency.items() if isinstance(v, float)})
    for name, (goal, how) in GOALS.items():
        if name not in figures:
            continue
        value = figures[name]
        met = value <= goal if how == "<=" else value >= goal
        emit(f"{name}_goal", f"{how}{goal:g}")
        emit(f"{name}_met", "true" if met else "false")


if __name__ == "__main__":
    main()
