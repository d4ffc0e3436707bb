"""Stateful invariant test of the auction house: hypothesis posts requests, commits and
reveals bids (sometimes wrongly, late or twice), finalises and moves time, on the real
contracts (embedded EVM). A model predicts every balance change to the wei; after every
step:

- NuxCoin is conserved: the holders' balances always sum to the fixed supply;
- the auction house holds exactly the escrow of open requests plus the deposits of their
  unrevealed bids (no funds stuck: a deposit is returned on reveal or forfeited to the
  consumer at finalisation; escrow is spent on leases or refunded);
- a finalised request opened exactly the leases the pure core's ``clear`` picks, at its
  price, and a refused action changed no balance;
- a winner's ticket declined or expired goes to the next runner-up in the core's rank order
  that still serves (same price, same escrow: no balance moves), or back to the consumer;
- the reference price kept on chain equals ``nuclux.core.market_price.reference_price``
  over the model's clearings;
- a request is finalised before its reveal window ends only when its commit window is closed
  and every committed bid is revealed.

It runs twice: with windows of seconds (the default deployment) and with windows of seconds
and blocks and the seed from the first reveal's own block, where early finalisations happen.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from nuclux.chain import ChainConnection
from nuclux.chain.deployment import DeployParams
from nuclux.chain.ledger import Ledger
from nuclux.chain.market_ledger import MarketLedger, RequestStatus, window_open
from nuclux.core.auction import AuctionRequest, Bid, clear, tie_key
from nuclux.core.market_price import ClearedAuction, reference_price
from nuclux.core.types import ONE_NUX, Address, ResourceClass
from nuclux.errors import ContractRevert, UsageError
from tests.chain.auction_kit import DEPOSIT, market, salt
from tests.chain.world import PARAMS, World, build_world

Deltas = Counter[str]
RESERVES = (10**14, 5 * 10**14, 10**15)


@dataclass
class Req:
    id: int
    consumer: str
    core: AuctionRequest
    escrow: int
    open: bool = True
    # provider -> (price, salt, depositor, revealed)
    bids: dict[str, tuple[int, bytes, str, bool]] = field(default_factory=dict)
    price: int = 0
    runners: list[str] = field(default_factory=list)  # revealed losers in rank order (<= m)
    tickets: dict[int, str] = field(default_factory=dict)  # lease -> provider, not answered
    excluded: frozenset[str] = frozenset()  # providers barred from bidding


BLOCK_WINDOWS = replace(
    PARAMS, auction_commit_blocks=4, auction_reveal_blocks=4, auction_seed_delay=0
)


class Env:
    def __init__(self, params: DeployParams = PARAMS) -> None:
        self.loop = asyncio.new_event_loop()
        self.conn = self.run(ChainConnection.open("embedded"))
        self.world: World = self.run(build_world(self.conn, params=params))
        for op in self.world.operators:  # operators pay deposits when they bid
            self.run(self.world.deployer.transfer(op.address, 100 * ONE_NUX))

    def run(self, aw: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(aw)

    def close(self) -> None:
        self.run(self.conn.close())
        self.loop.close()


SEEN: Counter[str] = Counter()  # outcomes over the run, to show what was exercised
EXAMPLES = int(os.environ.get("NUCLUX_INVARIANT_EXAMPLES", "6"))


@pytest.fixture(scope="module", params=[PARAMS, BLOCK_WINDOWS], ids=["seconds", "blocks"])
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    e = Env(request.param)
    yield e
    e.close()


class AuctionMachine(RuleBasedStateMachine):
    env: Env

    def __init__(self) -> None:
        super().__init__()
        self.w = self.env.world
        self.snap = self.run(self.w.conn.snapshot())
        self.supply = self.run(self.w.deployer.total_supply())
        self.house = self.w.deployment.address("AuctionHouse")
        self.requests: list[Req] = []
        self.held = self.run(self.w.deployer.balance(self.house))
        self.history: list[ClearedAuction] = []
        self.bal = self.balances()  # as of the last step: only attempts move money

    def teardown(self) -> None:
        self.run(self.w.conn.revert(self.snap))

    def run(self, aw: Awaitable[Any]) -> Any:
        return self.env.run(aw)

    def holders(self) -> list[str]:
        return [*self.w.holders(), self.house]

    def balances(self) -> dict[str, int]:
        return {a: self.run(self.w.deployer.balance(a)) for a in self.holders()}

    def pick(self, i: int) -> Req | None:
        """Mostly the latest request (so auctions run to the end), sometimes an older one."""
        if not self.requests:
            return None
        return self.requests[-1] if i < 14 else self.requests[i % len(self.requests)]

    def attempt(
        self, call: Callable[[], Awaitable[Any]], predict: Callable[[Any], Deltas] | Deltas
    ) -> Any:
        """Run ``call``; a refusal moves nothing, a success moves exactly ``predict(result)``."""
        bal0 = self.bal
        try:
            result = self.run(call())
        except (ContractRevert, UsageError):
            assert self.balances() == bal0, "a refused auction action moved money"
            SEEN["refused"] += 1
            return None
        expected = predict if isinstance(predict, Counter) else predict(result)
        bal1 = self.bal = self.balances()
        for a in bal0:
            assert bal1[a] - bal0[a] == expected.get(a, 0), (a, expected)
        self.held += expected.get(self.house, 0)
        return result

    # ------------------------------------------------------------------ rules

    @rule(
        consumer=st.integers(0, 1),
        m=st.integers(1, 3),
        m_min=st.integers(1, 3),
        reserve=st.sampled_from(RESERVES),
        extra=st.sampled_from([0, 0, 1, 10**12]),
        barred=st.sampled_from([(), (), (), (0,), (2,), (0, 1)]),
    )
    def post(
        self, consumer: int, m: int, m_min: int, reserve: int, extra: int, barred: tuple[int, ...]
    ) -> None:
        c = market(self.w.consumers[consumer])
        excluded = frozenset(self.w.providers[i].address for i in barred)
        core = AuctionRequest(0, ResourceClass.STORAGE, 5, 2, m, reserve, min(m_min, m))
        escrow = core.escrow + extra

        def predict(_: int) -> Deltas:
            return Counter({c.address: -escrow, self.house: escrow})

        rid = self.attempt(
            lambda: c.post_request(
                core.cls,
                core.units,
                core.term,
                m,
                reserve,
                m_min=core.m_min,
                escrow=escrow,
                exclude=sorted(excluded),
            ),
            predict,
        )
        if rid is not None:
            assert m <= len(self.w.providers) - len(excluded)
            core = AuctionRequest(rid, core.cls, core.units, core.term, m, reserve, core.m_min)
            self.requests.append(Req(rid, c.address, core, escrow, excluded=excluded))

    @rule(
        i=st.integers(0, 20),
        bidders=st.lists(
            st.tuples(st.integers(0, 2), st.booleans(), st.integers(1, 12)), min_size=1, max_size=3
        ),
    )
    def commit(self, i: int, bidders: list[tuple[int, bool, int]]) -> None:
        r = self.pick(i)
        if r is None:
            return
        for provider, hot, tenth in bidders:
            p = self.w.providers[provider]
            who = market(self.w.operators[provider] if hot else p)
            price = tenth * r.core.reserve // 10  # up to 20% above the reserve, ties likely
            s = salt(f"{r.id}/{p.address}/{price}")
            if self.attempt(
                partial(who.commit_bid, r.id, price, s, provider=p.address),
                Counter({who.address: -DEPOSIT, self.house: DEPOSIT}),
            ):
                assert p.address not in r.bids
                assert p.address not in r.excluded, "an excluded provider's bid was taken"
                r.bids[p.address] = (price, s, who.address, False)
                SEEN["committed"] += 1
            elif p.address in r.excluded:
                SEEN["excluded_refused"] += 1

    @rule(i=st.integers(0, 20), honest=st.lists(st.booleans(), min_size=3, max_size=3))
    def reveal(self, i: int, honest: list[bool]) -> None:
        r = self.pick(i)
        if r is None:
            return
        for p, straight in zip(self.w.providers, honest, strict=True):
            price, s, depositor, _ = r.bids.get(p.address, (10**14, salt("none"), p.address, False))
            shown = price if straight else price + 1
            if self.attempt(
                partial(market(p).reveal_bid, r.id, shown, s),
                Counter({depositor: DEPOSIT, self.house: -DEPOSIT}),
            ):
                assert straight
                assert p.address in r.bids
                assert price <= r.core.reserve
                r.bids[p.address] = (price, s, depositor, True)
                SEEN["revealed"] += 1

    @rule(i=st.integers(0, 20))
    def finalize(self, i: int) -> None:
        r = self.pick(i)
        if r is None:
            return
        m: MarketLedger = market(self.w.outsider)
        lm = self.w.lm_address

        head, now = self.run(m.head())
        before = self.run(m.request(r.id))

        def predict(out: Any) -> Deltas:
            forfeited = DEPOSIT * sum(1 for b in r.bids.values() if not b[3])
            # the block it landed in is the next one: was its reveal window still open?
            if window_open(before.reveal_end, before.reveal_end_block, head + 1, now):
                assert not before.commit_open(head + 1, now + 1)
                assert all(b[3] for b in r.bids.values()), "finalised with a bid still sealed"
                SEEN["finalized_early"] += 1
            if out.status is RequestStatus.OPEN:  # the seed was re-armed
                return Counter()
            revealed = [Bid(Address(a), b[0]) for a, b in r.bids.items() if b[3]]
            if out.status is RequestStatus.FAILED:
                assert len(revealed) < r.core.minimum
                return Counter(
                    {r.consumer: r.escrow + forfeited, self.house: -(r.escrow + forfeited)}
                )
            expected = clear(r.core, revealed, out.seed)
            assert [a for a, _ in out.leases] == [b.bidder for b in expected.winners]
            assert out.price == expected.price
            ranked = sorted(revealed, key=lambda b: (b.price, tie_key(out.seed, b.bidder)))
            k = len(expected.winners)
            r.runners = [b.bidder for b in ranked[k : k + r.core.m]]
            r.price = out.price
            r.tickets = {int(lid): str(a) for a, lid in out.leases}
            volume = k * r.core.units * r.core.term
            self.history.append(
                ClearedAuction(r.core.cls, out.price, volume, len(revealed), bool(r.excluded))
            )
            spent = len(expected.winners) * r.core.cost(expected.price)
            return Counter(
                {
                    r.consumer: r.escrow - spent + forfeited,
                    lm: spent,
                    self.house: -(r.escrow + forfeited),
                }
            )

        out = self.attempt(lambda: m.finalize(r.id), predict)
        if out is not None:
            SEEN[out.status.name.lower()] += 1
            r.open = out.status is RequestStatus.OPEN

    @rule(i=st.integers(0, 20), expire=st.booleans())
    def fail_ticket(self, i: int, expire: bool) -> None:
        """A winner (or a replacement) declines its ticket, or lets it expire."""
        cleared = [r for r in self.requests if r.tickets]
        if cleared:
            self.fail(cleared[i % len(cleared)], expire)

    def fail(self, r: Req, expire: bool) -> None:
        lid, provider = sorted(r.tickets.items())[0]
        d = self.w.deployer
        if expire:
            self.run(self.w.conn.advance_time(PARAMS.accept_window + 1))
        idx = [str(p.address) for p in self.w.providers].index(provider)
        op = self.w.operators[idx]
        count = self.run(d.lease_count())
        tried = self.run(market(d).request(r.id)).replacements
        each = r.core.cost(r.price)

        def predict(_: Any) -> Deltas:
            del r.tickets[lid]
            new = self.run(d.lease_count())
            now = self.run(market(d).request(r.id)).replacements
            serving = [a for a in r.runners[tried:] if self.serves(a)]
            if new > count:  # replaced by the first runner-up that still serves
                lease = self.run(d.lease(new))
                assert serving
                assert lease.provider == serving[0]
                assert r.runners[now - 1] == serving[0]
                assert (lease.price, lease.escrow) == (r.price, each)
                r.tickets[new] = lease.provider
                SEEN["replaced"] += 1
                return Counter()
            assert not serving
            assert now == len(r.runners)
            SEEN["replacement_refunded"] += 1
            return Counter({r.consumer: each, self.w.lm_address: -each})

        call = partial(self.w.outsider.expire_ticket, lid) if expire else partial(op.decline, lid)
        if self.attempt(call, predict) is None:
            r.tickets.pop(lid, None)  # answered already (expired by time passing, say)

    def serves(self, provider: str) -> bool:
        reg = self.w.deployer.registry
        try:
            self.run(reg.functions.quote(provider, int(ResourceClass.STORAGE)).call())
        except Exception:
            return False
        return True

    @rule(
        consumer=st.integers(0, 1),
        m=st.integers(1, 3),
        m_min=st.integers(1, 3),
        reserve=st.sampled_from(RESERVES),
        bidders=st.lists(
            st.tuples(st.integers(0, 2), st.booleans(), st.integers(1, 12)), min_size=1, max_size=3
        ),
        honest=st.lists(st.booleans(), min_size=3, max_size=3),
        fail=st.sampled_from([None, False, True]),
        barred=st.sampled_from([(), (), (), (2,)]),
    )
    def whole_auction(
        self,
        consumer: int,
        m: int,
        m_min: int,
        reserve: int,
        bidders: list[tuple[int, bool, int]],
        honest: list[bool],
        fail: bool | None,
        barred: tuple[int, ...] = (),
    ) -> None:
        """One request run through its windows: post, commit, reveal (a false reveal stays
        silent and is forfeited), finalise at once (refused while a bid is sealed) or after
        the reveal window; then perhaps a winner declines (``fail`` False)
        or lets its ticket expire (True), and so may its replacement."""
        self.post(consumer, m, m_min, reserve, 0, barred)
        self.commit(0, bidders)
        self.advance(61)
        self.reveal(0, honest)
        self.finalize(0)  # early: cleared or failed if every bid is open, refused if not
        self.advance(61)
        self.mine(3)
        self.finalize(0)
        r = self.requests[-1] if self.requests else None
        for _ in range(2):
            if fail is not None and r is not None and r.tickets:
                self.fail(r, fail)

    @rule(
        m=st.integers(1, 2),
        tenths=st.lists(st.integers(1, 10), min_size=3, max_size=3),
        expire=st.booleans(),
    )
    def contested_auction(self, m: int, tenths: list[int], expire: bool) -> None:
        """All three providers bid honestly, so runners-up exist; then winners fail in turn."""
        bidders = [(i, i == 1, t) for i, t in enumerate(tenths)]
        self.whole_auction(0, m, m, RESERVES[2], bidders, [True] * 3, expire)

    @rule(seconds=st.sampled_from([5, 61, 121]))
    def advance(self, seconds: int) -> None:
        self.run(self.w.conn.advance_time(seconds))

    @rule(blocks=st.integers(1, 4))
    def mine(self, blocks: int) -> None:
        for _ in range(blocks):
            self.run(self.w.conn.mine())

    # ------------------------------------------------------------------ invariants

    @invariant()
    def supply_conserved(self) -> None:
        assert sum(self.bal.values()) == self.supply

    @invariant()
    def house_holds_exactly_open_escrow_and_unrevealed_deposits(self) -> None:
        owed = sum(
            r.escrow + DEPOSIT * sum(1 for b in r.bids.values() if not b[3])
            for r in self.requests
            if r.open
        )
        assert self.bal[self.house] == self.held == owed

    @invariant()
    def the_reference_price_is_the_cores(self) -> None:
        on_chain = self.run(market(self.w.deployer).reference_price(ResourceClass.STORAGE))
        assert on_chain == reference_price(
            self.history, ResourceClass.STORAGE, min_bidders=3, window=32
        )

    @invariant()
    def the_contract_agrees_with_the_model(self) -> None:
        d: Ledger = self.w.deployer
        m = market(d)
        for r in self.requests[-3:]:
            info = self.run(m.request(r.id))
            assert (info.status is RequestStatus.OPEN) == r.open
            assert info.commits == len(r.bids)
            assert info.reveals == sum(1 for b in r.bids.values() if b[3])


def test_auction_invariants(env: Env) -> None:
    SEEN.clear()
    AuctionMachine.env = env
    run_state_machine_as_test(
        AuctionMachine,
        settings=settings(
            max_examples=EXAMPLES,
            derandomize=True,  # the same runs every time, so what they reach is asserted
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    # the runs reached every outcome (and refusals of every kind on the way)
    assert SEEN["cleared"] > 0, SEEN
    assert SEEN["failed"] > 0, SEEN
    assert SEEN["revealed"] > SEEN["cleared"], SEEN
    assert SEEN["replaced"] > 0, SEEN
    assert SEEN["replacement_refunded"] > 0, SEEN
    assert SEEN["finalized_early"] > 0, SEEN
    assert SEEN["excluded_refused"] > 0, SEEN
