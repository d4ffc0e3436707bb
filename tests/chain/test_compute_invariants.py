"""Stateful invariant test of compute leases: hypothesis drives the real LeaseManager and
CumulativeSettlement on the embedded EVM.

Steps open compute leases (accepted, or left as tickets), have both sides sign ever higher
cumulative totals off chain, submit any of them by either side (the latest, or a stale one),
try forged submissions (the consumer signing for the provider, an outsider signing, a total
the provider never signed, a signature from another lease, a decreasing total), claim, top
up, extend, cancel, end terms, settle, and move chain time. An independent model predicts
what the contracts accept and every balance change to the wei; after every step we check:

- NuxCoin is conserved; the LeaseManager holds exactly deposits - payments - refunds and the
  registry exactly the stakes;
- the module's latest state of each lease is the model's (highest accepted revision);
- a provider is never paid more than min(escrow, latest total both sides signed), and a
  claim or settlement pays exactly min(escrow, latest submitted total) - paid, the consumer
  getting the rest of the escrow back;
- a refused step changes nothing (no balance, no lease, no submitted state).
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from nuclux.chain import ChainConnection, Ledger
from nuclux.chain.usage import Usage
from nuclux.core.lease import Lease, LeaseState
from nuclux.core.types import ONE_NUX, ResourceClass
from nuclux.errors import ContractRevert, UsageError
from tests.chain.world import PARAMS, PRICES, World, build_world

COMPUTE = ResourceClass.COMPUTE
LIVE = (LeaseState.ACTIVE, LeaseState.ACTIVE_TICKETED)
PAYABLE = (*LIVE, LeaseState.CLOSING)
ALL = tuple(LeaseState)
MAX_LEASES, MAX_OPEN = 8, 4  # every step reads them all
EXAMPLES = int(os.environ.get("NUCLUX_INVARIANT_EXAMPLES", "5"))


class Env:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.conn: ChainConnection = self.run(ChainConnection.open("embedded"))
        self.world: World = self.run(build_world(self.conn, default_modules=True))
        # far ahead of the wall clock: every block is then exactly one second after the last
        self.run(self.conn.advance_time(86_400))

    def run(self, aw: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(aw)

    def close(self) -> None:
        self.run(self.conn.close())
        self.loop.close()


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    e = Env()
    yield e
    e.close()


@dataclass
class Signed:
    usage: Usage
    consumer_sig: bytes
    provider_sig: bytes


@dataclass
class Tracked:
    lid: int
    consumer: Ledger
    provider: int  # index into the world's providers
    signed: list[Signed] = field(default_factory=list)  # increasing revisions and totals
    on_chain: tuple[int, int] = (0, 0)  # (revision, cumulative) the module holds
    state: LeaseState = LeaseState.TICKETED  # as of the last step (only calls move it)

    @property
    def top(self) -> int:
        """The highest total both sides signed."""
        return self.signed[-1].usage.cumulative if self.signed else 0


class ComputeMachine(RuleBasedStateMachine):
    env: Env

    def __init__(self) -> None:
        super().__init__()
        self.w = self.env.world
        self.snap = self.env.run(self.w.conn.snapshot())
        self.supply = self.run(self.w.deployer.total_supply())
        self.held = self.run(self.w.deployer.balance(self.w.lm_address))
        self.leases: list[Tracked] = []
        w = self.w
        people = [*w.consumers, *w.providers]
        self.parties = [p.address for p in people] + [w.lm_address, w.registry_address]
        self.others = self.balances([a for a in w.holders() if a not in self.parties])
        self.cached = self.balances()  # the parties' balances after the last step
        # nothing here slashes or unbonds: the registry holds the same stakes throughout
        self.stakes = sum(self.run(w.deployer.provider(p.address)).stake for p in w.providers)

    def teardown(self) -> None:
        try:
            for t in self.leases:
                self.check_lease(t)
            # no step moved money of anyone else
            assert self.balances(list(self.others)) == self.others
        finally:  # whatever failed: the next example starts from the same chain
            self.env.run(self.w.conn.revert(self.snap))

    # ------------------------------------------------------------------ helpers

    def run(self, aw: Awaitable[Any]) -> Any:
        return self.env.run(aw)

    def lease(self, t: Tracked) -> Lease:
        lease: Lease = self.run(self.w.deployer.lease(t.lid))
        return lease

    def latest(self, t: Tracked) -> tuple[int, int]:
        rev, total = self.run(self.w.deployer.latest_usage(COMPUTE, t.lid))
        return int(rev), int(total)

    def among(self, states: tuple[LeaseState, ...]) -> list[Tracked]:
        return [t for t in self.leases if t.state in states]

    def pick(self, i: int, states: tuple[LeaseState, ...] = ALL) -> Tracked:
        """A lease in one of ``states`` (the rules' preconditions make sure there is one)."""
        some = self.among(states)
        return some[i % len(some)]

    def balances(self, who: list[str] | None = None) -> dict[str, int]:
        """NuxCoin balances of ``who`` (default: the parties and the contracts, the only
        holders a compute step may move; the others are checked constant by ``books``)."""
        return {a: self.run(self.w.deployer.balance(a)) for a in who or self.parties}

    def when(self, predicate: Callable[[int], bool]) -> bool | None:
        """Whether a transaction mined next satisfies ``predicate(block timestamp)``; None
        when that depends on which of the next few seconds it lands in (either outcome is
        then accepted, and checked for consistency)."""
        now: int = self.run(self.w.conn.now())
        outcomes = {predicate(now + d) for d in range(4)}
        return outcomes.pop() if len(outcomes) == 1 else None

    def expect(
        self,
        t: Tracked | None,
        call: Awaitable[Any],
        ok: bool | None,
        deltas: Counter[str] | None = None,
    ) -> bool:
        """Run ``call`` on lease ``t``; it must succeed iff ``ok`` (either, for None), moving
        exactly ``deltas`` if it does and nothing at all (no balance, not the lease, not its
        submitted state) if it does not."""
        bal0 = self.cached
        before = None if t is None else (self.lease(t), self.latest(t))
        try:
            self.run(call)
            done = True
        except (ContractRevert, UsageError):
            done = False
        if ok is not None:
            assert done is ok, f"expected {'success' if ok else 'refusal'}"
        bal1 = self.cached = self.balances()
        if not done:
            assert bal1 == bal0, "a refused step moved money"
            if t is not None:
                assert (self.lease(t), self.latest(t)) == before, "a refused step changed state"
            return False
        if t is not None:
            t.state = self.lease(t).state
        want = deltas or Counter()
        for a in bal0:
            assert bal1[a] - bal0[a] == want.get(a, 0), (a, want)
        self.held += want.get(self.w.lm_address, 0)
        return True

    def open_for_usage(self, lease: Lease) -> Callable[[int], bool]:
        def at(ts: int) -> bool:
            if lease.state is LeaseState.CLOSING:
                return ts < lease.deadline
            return lease.state in LIVE

        return at

    def ext_refund(self, lease: Lease) -> Counter[str]:
        if lease.state is not LeaseState.ACTIVE_TICKETED or lease.ext_escrow == 0:
            return Counter()
        return Counter({lease.consumer: lease.ext_escrow, self.w.lm_address: -lease.ext_escrow})

    def provider_signer(self, t: Tracked, owner: bool) -> Ledger:
        return self.w.providers[t.provider] if owner else self.w.operators[t.provider]

    def submit_and_expect(
        self, t: Tracked, s: Signed, by_consumer: bool, ok: bool | None = None
    ) -> None:
        """Submit ``s``; unless ``ok`` is given, the module takes it iff the lease is open, the
        revision newer and the total not lower."""
        lease = self.lease(t)
        rev, total = t.on_chain
        newer = s.usage.revision > rev and s.usage.cumulative >= total
        if ok is None:
            ok_at = self.open_for_usage(lease)
            ok = self.when(lambda ts: newer and ok_at(ts))
        who = t.consumer if by_consumer else self.w.operators[t.provider]
        call = who.submit_usage(COMPUTE, s.usage, s.consumer_sig, s.provider_sig)
        if self.expect(t, call, ok):
            t.on_chain = (s.usage.revision, s.usage.cumulative)

    # ------------------------------------------------------------------ rules

    @initialize(escrows=st.tuples(st.integers(1, ONE_NUX // 10), st.integers(1, ONE_NUX // 10)))
    def two_leases(self, escrows: tuple[int, int]) -> None:
        """Every run starts with two accepted leases, so early steps have leases to act on."""
        for i, escrow in enumerate(escrows):
            self.open(i, i, 1 + i, 3, escrow, accept=True)

    @precondition(
        lambda self: (
            len(self.leases) < MAX_LEASES
            and len(self.among((LeaseState.TICKETED, *PAYABLE))) < MAX_OPEN
        )
    )
    @rule(
        consumer=st.integers(0, 1),
        provider=st.integers(0, 2),
        units=st.integers(1, 4),
        term=st.integers(1, 4),
        escrow=st.integers(1, ONE_NUX // 10),
        accept=st.booleans(),
    )
    def open(
        self, consumer: int, provider: int, units: int, term: int, escrow: int, accept: bool
    ) -> None:
        c, p = self.w.consumers[consumer], self.w.providers[provider]
        got: list[int] = []

        async def call() -> None:
            got.append(await c.open_lease(p.address, COMPUTE, units, term, PRICES[1], escrow))

        assert self.expect(
            None, call(), True, Counter({c.address: -escrow, self.w.lm_address: escrow})
        )
        t = Tracked(got[0], c, provider)
        self.leases.append(t)
        if accept:
            self.expect(t, self.w.operators[provider].accept(t.lid), True)

    @precondition(lambda self: self.among(PAYABLE))
    @rule(
        i=st.integers(0, 50),
        share=st.integers(0, 40),
        owner=st.booleans(),
        submit=st.sampled_from(["no", "consumer", "provider"]),
    )
    def sign(self, i: int, share: int, owner: bool, submit: str) -> None:
        """Both sides sign the next revision: the total grows by up to 40% of the escrow (so
        totals pass the escrow now and then); one side may submit it at once."""
        t = self.pick(i, PAYABLE)
        lease = self.lease(t)
        rev = t.signed[-1].usage.revision + 1 if t.signed else 1
        usage = Usage(t.lid, rev, t.top + lease.escrow * share // 100)
        t.signed.append(
            Signed(
                usage,
                t.consumer.sign_usage(COMPUTE, usage),
                self.provider_signer(t, owner).sign_usage(COMPUTE, usage),
            )
        )
        if submit != "no":
            self.submit_and_expect(t, t.signed[-1], by_consumer=submit == "consumer")

    @precondition(lambda self: any(t.signed for t in self.leases))
    @rule(i=st.integers(0, 50), back=st.integers(0, 3), by_consumer=st.booleans())
    def submit(self, i: int, back: int, by_consumer: bool) -> None:
        """Either side submits a co-signed state: the latest, or one ``back`` revisions
        older (stale once a newer one is on chain)."""
        some = [t for t in self.leases if t.signed]
        t = some[i % len(some)]
        s = t.signed[max(len(t.signed) - 1 - back, 0)]
        self.submit_and_expect(t, s, by_consumer)

    @precondition(lambda self: self.leases)
    @rule(
        i=st.integers(0, 50),
        how=st.sampled_from(
            ["consumer-both", "outsider", "unsigned-total", "other-lease", "lower"]
        ),
        by_consumer=st.booleans(),
    )
    def forge(self, i: int, how: str, by_consumer: bool) -> None:
        """A submission that must be refused whatever the lease's state."""
        t = self.pick(i)
        c, op = t.consumer, self.w.operators[t.provider]
        rev = max(t.on_chain[0], t.signed[-1].usage.revision if t.signed else 0) + 1
        usage = Usage(t.lid, rev, t.top + 1)
        if how == "consumer-both":  # the consumer signs in the provider's place
            s = Signed(usage, c.sign_usage(COMPUTE, usage), c.sign_usage(COMPUTE, usage))
        elif how == "outsider":  # the provider's signature by someone else
            s = Signed(
                usage, c.sign_usage(COMPUTE, usage), self.w.outsider.sign_usage(COMPUTE, usage)
            )
        elif how == "unsigned-total":  # the consumer signed a lower total than submitted
            lower = Usage(t.lid, rev, t.top)
            s = Signed(usage, c.sign_usage(COMPUTE, lower), op.sign_usage(COMPUTE, usage))
        elif how == "other-lease":  # signatures made for another lease
            other = Usage(t.lid + 1000, rev, t.top + 1)
            s = Signed(usage, c.sign_usage(COMPUTE, other), op.sign_usage(COMPUTE, other))
        else:  # both sign a total below the one on chain
            if t.on_chain[1] == 0:
                return
            usage = Usage(t.lid, rev, t.on_chain[1] - 1)
            s = Signed(usage, c.sign_usage(COMPUTE, usage), op.sign_usage(COMPUTE, usage))
        self.submit_and_expect(t, s, by_consumer, ok=False)

    @precondition(lambda self: self.among(PAYABLE))
    @rule(i=st.integers(0, 50))
    def claim(self, i: int) -> None:
        t = self.pick(i, PAYABLE)
        lease = self.lease(t)
        due = max(lease.paid, min(lease.escrow, t.on_chain[1]))
        amount = due - lease.paid
        ok = lease.state in PAYABLE and amount > 0
        deltas = Counter({lease.provider: amount, self.w.lm_address: -amount})
        self.expect(t, self.w.outsider.claim(t.lid), ok, deltas if ok else None)

    @precondition(lambda self: self.among(LIVE))
    @rule(
        i=st.integers(0, 50),
        epochs=st.integers(1, 3),
        amount=st.integers(0, ONE_NUX // 20),
        how=st.sampled_from(["top-up", "accepted", "declined", "unanswered"]),
    )
    def add_escrow(self, i: int, epochs: int, amount: int, how: str) -> None:
        """The consumer tops the lease up, or buys an extension the provider answers."""
        t = self.pick(i, LIVE)
        lease = self.lease(t)
        deltas = Counter({t.consumer.address: -amount, self.w.lm_address: amount})
        if how == "top-up":
            ok = lease.state in LIVE and amount > 0
            self.expect(t, t.consumer.top_up(t.lid, amount), ok, deltas if ok else None)
            return
        epoch_len = PARAMS.epoch_length
        ok_at = self.when(
            lambda ts: lease.state is LeaseState.ACTIVE and ts // epoch_len < lease.end_epoch
        )
        if not self.expect(t, t.consumer.extend(t.lid, epochs, amount), ok_at, deltas):
            return
        op = self.w.operators[t.provider]
        if how == "accepted":  # refused once the term has ended
            if self.expect(t, op.accept_extension(t.lid), None):
                assert self.lease(t).escrow == lease.escrow + amount
        elif how == "declined":
            self.expect(t, op.decline_extension(t.lid), True, self.ext_refund(self.lease(t)))

    @precondition(lambda self: self.among((LeaseState.TICKETED, *LIVE)))
    @rule(i=st.integers(0, 50))
    def cancel(self, i: int) -> None:
        t = self.pick(i, (LeaseState.TICKETED, *LIVE))
        lease = self.lease(t)
        if lease.state is LeaseState.TICKETED:
            deltas = Counter({t.consumer.address: lease.escrow, self.w.lm_address: -lease.escrow})
            self.expect(t, t.consumer.cancel(t.lid), True, deltas)
        else:
            ok = lease.state in LIVE
            self.expect(t, t.consumer.cancel(t.lid), ok, self.ext_refund(lease) if ok else None)

    @precondition(lambda self: self.among(LIVE))
    @rule(i=st.integers(0, 50))
    def end_term(self, i: int) -> None:
        t = self.pick(i, LIVE)
        lease = self.lease(t)
        epoch_len = PARAMS.epoch_length
        ok = self.when(lambda ts: lease.state in LIVE and ts // epoch_len >= lease.end_epoch)
        self.expect(t, self.w.outsider.end_term(t.lid), ok, self.ext_refund(lease))

    @precondition(lambda self: self.among((LeaseState.CLOSING,)))
    @rule(i=st.integers(0, 50))
    def settle(self, i: int) -> None:
        t = self.pick(i, (LeaseState.CLOSING,))
        lease = self.lease(t)
        ok = self.when(lambda ts: lease.state is LeaseState.CLOSING and ts >= lease.deadline)
        due = max(lease.paid, min(lease.escrow, t.on_chain[1]))
        deltas = Counter(
            {
                lease.provider: due - lease.paid,
                lease.consumer: lease.escrow - due,
                self.w.lm_address: -(lease.escrow - lease.paid),
            }
        )
        if self.expect(t, self.w.outsider.settle(t.lid), ok, deltas):
            assert self.lease(t).state is LeaseState.CLOSED

    @rule(seconds=st.integers(1, 8 * PARAMS.epoch_length))
    def wait(self, seconds: int) -> None:
        self.run(self.w.conn.advance_time(seconds))

    # ------------------------------------------------------------------ invariants

    @invariant()
    def books(self) -> None:
        w = self.w
        parties = self.balances()
        assert parties == self.cached  # only the steps' calls move money
        assert sum(parties.values()) + sum(self.others.values()) == self.supply
        assert parties[w.lm_address] == self.held
        assert parties[w.registry_address] == self.stakes
        for t in self.among((LeaseState.TICKETED, *PAYABLE)):  # closed ones: in teardown
            self.check_lease(t)

    def check_lease(self, t: Tracked) -> None:
        """The module holds what the model says; the provider got at most min(escrow, that
        total), which is at most the latest total both sides signed."""
        lease = self.lease(t)
        assert lease.state is t.state
        assert self.latest(t) == t.on_chain
        assert t.on_chain[1] <= t.top
        assert lease.paid <= min(lease.escrow, t.on_chain[1])


def test_compute_lease_invariants(env: Env) -> None:
    ComputeMachine.env = env
    run_state_machine_as_test(
        ComputeMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=30,
            # no shrinking: replaying examples of 30 chain steps would outlast the test
            # timeout; a failure is reported with all its steps instead
            phases=[Phase.explicit, Phase.reuse, Phase.generate],
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
