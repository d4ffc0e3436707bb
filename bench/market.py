"""The market's figures, as ``name=value`` lines.

    .venv/bin/python bench/market.py [--bids 10000] [--runs 9]

``clear_10k_ms``: the median time of clearing one request (m = 16) over 10,000 revealed bids
with random prices and distinct bidders in the pure core (``nuclux.core.auction.clear``),
bids built beforehand; ``clear_10k_tied_ms`` the same when every bid has the same price (the
worst case: every bid's tie-break key is hashed). Goal: ``clear_10k_ms <= 100``.

End-to-end lease acquisition on anvil and gas per auction come with the on-chain auction.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

from nuclux.core.auction import AuctionRequest, Bid, clear
from nuclux.core.auth import to_address
from nuclux.core.types import ResourceClass

GOALS = {"clear_10k_ms": (100.0, "<=")}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bids", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=9)
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
    for name, (goal, how) in GOALS.items():
        value = figures[name]
        met = value <= goal if how == "<=" else value >= goal
        emit(f"{name}_goal", f"{how}{goal:g}")
        emit(f"{name}_met", "true" if met else "false")


if __name__ == "__main__":
    main()
