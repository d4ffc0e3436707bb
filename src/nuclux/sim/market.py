"""A market simulator: many auctions with random costs, cleared by the pure core.

    .venv/bin/python -m nuclux.sim.market [--rounds 1000] [--providers 40] [--seed 1]

Each round a consumer asks for ``m`` providers at a reserve; every provider has a private
cost per unit, drawn at random, and bids it (truthfully) unless a strategy says otherwise.
The auction clears by ``nuclux.core.auction.clear``. For every round the simulator checks
the properties the mechanism promises and counts violations:

- **truthfulness**: no provider gains by bidding anything else (tried: a set of deviations
  around its cost and around the clearing price) while the others bid their costs;
- **individual rationality**: no winner is paid below its bid (so a truthful one never
  loses money);
- **efficiency**: every winner's cost is at most every acceptable loser's cost;
- **reserve**: the consumer never pays more than its reserve per unit.

It prints ``name=value`` lines: rounds, failed requests, mean clearing price over mean
winning cost (the price of truthfulness), the mean surplus of winners, and the violation
counts (all 0 when the mechanism holds). Randomness comes from a seeded generator, so a
run is reproducible.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from nuclux.core.auction import AuctionRequest, Bid, Clearing, clear, utility
from nuclux.core.auth import to_address
from nuclux.core.market_price import ClearedAuction, reference_price
from nuclux.core.types import Address, ResourceClass

Rule = Callable[[AuctionRequest, Sequence[Bid], bytes], Clearing]


@dataclass(frozen=True, slots=True)
class Provider:
    address: Address
    cost: int


@dataclass(slots=True)
class Stats:
    """What a simulation run found."""

    rounds: int = 0
    failed: int = 0
    winners: int = 0
    paid: int = 0  # sum of clearing prices over winners
    winner_costs: int = 0
    surplus: int = 0
    truthfulness_violations: int = 0
    rationality_violations: int = 0
    efficiency_violations: int = 0
    reserve_violations: int = 0
    deviations_tried: int = 0

    @property
    def violations(self) -> int:
        return (
            self.truthfulness_violations
            + self.rationality_violations
            + self.efficiency_violations
            + self.reserve_violations
        )


def providers(rng: random.Random, count: int, low: int, high: int) -> list[Provider]:
    """``count`` providers with distinct addresses and costs uniform in ``low..high``."""
    return [Provider(to_address(rng.randbytes(20)), rng.randint(low, high)) for _ in range(count)]


def play(
    request: AuctionRequest,
    field: Sequence[Provider],
    seed: bytes,
    strategy: Mapping[str, int | None] | None = None,
    rule: Rule = clear,
) -> Clearing:
    """One auction: each provider bids its cost, or ``strategy[address]`` (None: no bid),
    cleared by ``rule`` (the core's ``clear`` unless a test swaps in another rule)."""
    strategy = strategy or {}
    bids = []
    for p in field:
        price = strategy.get(p.address, p.cost)
        if price is not None:
            bids.append(Bid(p.address, price))
    return rule(request, bids, seed)


def deviations(cost: int, price: int, reserve: int) -> list[int | None]:
    """Bids a provider might try instead of its cost: not bidding, and prices around its
    cost, the clearing price and the reserve."""
    points = {1, 2, cost // 2, cost - 1, cost + 1, 2 * cost, price - 1, price, price + 1}
    points |= {reserve - 1, reserve, reserve + 1}
    return [None, *sorted(p for p in points if 1 <= p <= 2**128 - 1 and p != cost)]


def check_round(
    request: AuctionRequest,
    field: Sequence[Provider],
    seed: bytes,
    stats: Stats,
    rule: Rule = clear,
) -> Clearing:
    """Play one truthful round, check every property, and add what it found to ``stats``."""
    truthful = play(request, field, seed, rule=rule)
    stats.rounds += 1
    if not truthful.ok:
        stats.failed += 1
    cost = {p.address: p.cost for p in field}
    for bid in truthful.winners:
        stats.winners += 1
        stats.paid += truthful.price
        stats.winner_costs += cost[bid.bidder]
        stats.surplus += truthful.price - cost[bid.bidder]
        if truthful.price < bid.price:
            stats.rationality_violations += 1
    if truthful.ok and truthful.price > request.reserve:
        stats.reserve_violations += 1
    won = truthful.winner_set
    losers = [p.cost for p in field if p.address.lower() not in won and p.cost <= request.reserve]
    if losers and any(cost[b.bidder] > min(losers) for b in truthful.winners):
        stats.efficiency_violations += 1
    for p in field:
        honest = utility(request, truthful, p.address, p.cost)
        for lie in deviations(p.cost, truthful.price, request.reserve):
            stats.deviations_tried += 1
            other = play(request, field, seed, {p.address: lie}, rule)
            if utility(request, other, p.address, p.cost) > honest:
                stats.truthfulness_violations += 1
    return truthful


def simulate(
    rounds: int, n_providers: int, seed: int, *, check_deviations: bool = True
) -> tuple[Stats, list[ClearedAuction]]:
    """Play ``rounds`` auctions among ``n_providers`` with fresh random costs each round."""
    rng = random.Random(seed)  # noqa: S311 - a reproducible simulation, not a secret
    stats = Stats()
    history: list[ClearedAuction] = []
    for r in range(rounds):
        field = providers(rng, n_providers, 50, 150)
        m = rng.randint(1, max(1, n_providers // 4))
        request = AuctionRequest(
            request_id=r,
            cls=ResourceClass(rng.randrange(3)),
            units=rng.randint(1, 100),
            term=rng.randint(1, 24),
            m=m,
            m_min=rng.randint(1, m),
            reserve=rng.randint(60, 200),
        )
        tie_seed = rng.randbytes(32)
        if check_deviations:
            outcome = check_round(request, field, tie_seed, stats)
        else:
            outcome = play(request, field, tie_seed)
            stats.rounds += 1
            stats.failed += 0 if outcome.ok else 1
        if outcome.ok:
            volume = len(outcome.winners) * request.units * request.term
            history.append(ClearedAuction(request.cls, outcome.price, volume, outcome.acceptable))
    return stats, history


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--providers", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    stats, history = simulate(args.rounds, args.providers, args.seed)
    print(f"rounds={stats.rounds}")
    print(f"failed={stats.failed}")
    print(f"deviations_tried={stats.deviations_tried}")
    if stats.winners:
        print(f"price_over_cost={stats.paid / stats.winner_costs:.3f}")
        print(f"mean_winner_surplus={stats.surplus / stats.winners:.2f}")
    for cls in ResourceClass:
        print(f"reference_price_{cls.name.lower()}={reference_price(history, cls)}")
    print(f"truthfulness_violations={stats.truthfulness_violations}")
    print(f"rationality_violations={stats.rationality_violations}")
    print(f"efficiency_violations={stats.efficiency_violations}")
    print(f"reserve_violations={stats.reserve_violations}")


if __name__ == "__main__":
    main()
