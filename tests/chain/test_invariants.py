"""Stateful invariant tests: hypothesis drives the real contracts on the embedded EVM.

Each step tries a lease action (by the right party or, sometimes, the wrong one) or moves
chain time. An independent model (``nuclux.core.lease``) predicts every balance change to the
wei; after every step we check:

- NuxCoin is conserved: the holders' balances always sum to the fixed supply;
- the LeaseManager holds exactly deposits - payments - refunds, the registry exactly the stakes;
- no provider is ever paid more than min(escrow, entitlement);
- refunds are exact (every holder's balance moved by exactly the predicted delta);
- a transition succeeds only if the table allows it, and lands where the table says;
  a refused action changes no balance and no state.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from nuclux.chain import ChainConnection
from nuclux.chain.anvil import AnvilProcess, find_anvil
from nuclux.chain.ledger import Ledger
from nuclux.core.lease import TRANSITIONS, Action, Lease, LeaseState, due, time_accrual_entitlement
from nuclux.core.types import ONE_NUX, ResourceClass
from nuclux.errors import ContractRevert, UsageError
from tests.chain.world import PARAMS, PRICES, World, build_world

Deltas = Counter[str]


class Env:
    """A deployed world on one backend, driven from a private event loop."""

    def __init__(self, backend: str, state_dir: Path) -> None:
        self.examples = 1
        self.loop = asyncio.new_event_loop()
        self.node: AnvilProcess | None = None
        url = "embedded"
        if backend == "anvil":
            self.node = self.run(AnvilProcess(state_dir, binary=find_anvil()).start())
            url = self.node.rpc_url
        self.conn = self.run(ChainConnection.open(url, tx_timeout=30))
        self.world: World = self.run(build_world(self.conn))

    def run(self, aw: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(aw)

    def close(self) -> None:
        self.run(self.conn.close())
        if self.node is not None:
            self.run(self.node.stop())
        self.loop.close()


# Default examples per backend keep CI fast; raise NUCLUX_INVARIANT_EXAMPLES for deeper runs
# (e.g. 100 before changing the contracts).
EXAMPLES = int(os.environ.get("NUCLUX_INVARIANT_EXAMPLES", "6"))


@pytest.fixture(
    scope="module",
    params=[
        pytest.param(("embedded", EXAMPLES), id="embedded"),
        pytest.param(("anvil", EXAMPLES), id="anvil", marks=pytest.mark.anvil),
    ],
)
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    backend, examples = request.param
    e = Env(backend, tmp_path_factory.mktemp(backend))
    e.examples = examples
    yield e
    e.close()


class LeaseMachine(RuleBasedStateMachine):
    env: Env

    def __init__(self) -> None:
        super().__init__()
        self.w = self.env.world
        self.snap = self.env.run(self.w.conn.snapshot())
        self.supply = self.env.run(self.w.deployer.total_supply())
        self.leases: list[int] = []
        self.held = self.env.run(self.w.deployer.balance(self.w.lm_address))
        self.steps_ok = 0

    def teardown(self) -> None:
        self.env.run(self.w.conn.revert(self.snap))

    # ------------------------------------------------------------------ helpers

    def run(self, aw: Awaitable[Any]) -> Any:
        return self.env.run(aw)

    def balances(self) -> dict[str, int]:
        d = self.w.deployer
        return {a: self.run(d.balance(a)) for a in self.w.holders()}

    def lease(self, lid: int) -> Lease:
        lease: Lease = self.run(self.w.deployer.lease(lid))
        return lease

    def party(self, address: str, operator: bool = False) -> Ledger:
        for i, p in enumerate(self.w.providers):
            if p.address == address:
                return self.w.operators[i] if operator else p
        for c in self.w.consumers:
            if c.address == address:
                return c
        raise AssertionError(address)

    def wrong(self, right: Ledger) -> Ledger:
        return self.w.outsider if right is not self.w.outsider else self.w.consumers[0]

    def pick(self, i: int) -> int | None:
        return self.leases[i % len(self.leases)] if self.leases else None

    def epoch_now(self) -> int:
        now: int = self.run(self.w.conn.now())
        return now // PARAMS.epoch_length

    def attempt(
        self,
        lid: int | None,
        action: Action,
        call: Callable[[], Awaitable[Any]],
        predict: Callable[[Any, int], Deltas],
    ) -> bool:
        """Run one action; check the table, the balances and the state against the model."""
        before = self.lease(lid) if lid is not None else None
        state0 = before.state if before else LeaseState.NONE
        bal0 = self.balances()
        try:
            self.run(call())
            ok = True
        except (ContractRevert, UsageError):
            ok = False
        bal1 = self.balances()
        if not ok:
            assert bal1 == bal0, f"a refused {action.value} moved money"
            if before is not None:
                assert self.lease(before.id) == before, f"a refused {action.value} changed state"
            return False
        expected = predict(before, self.epoch_now())
        for a in bal0:
            assert bal1[a] - bal0[a] == expected.get(a, 0), (action.value, a, expected)
        self.held += expected.get(self.w.lm_address, 0)
        if before is not None:
            after = self.lease(before.id)
            assert (state0, action) in TRANSITIONS, f"{action.value} succeeded from {state0}"
            assert after.state is TRANSITIONS[(state0, action)]
        self.steps_ok += 1
        return True

    def settlement(self, lease: Lease, epoch: int) -> Deltas:
        owed = due(lease, time_accrual_entitlement(lease, epoch))
        return Counter(
            {
                lease.provider: owed - lease.paid,
                lease.consumer: lease.escrow - owed,
                self.w.lm_address: -(lease.escrow - lease.paid),
            }
        )

    def ext_refund(self, lease: Lease) -> Deltas:
        if lease.state is not LeaseState.ACTIVE_TICKETED:
            return Counter()
        return Counter({lease.consumer: lease.ext_escrow, self.w.lm_address: -lease.ext_escrow})

    # ------------------------------------------------------------------ rules

    @rule(
        consumer=st.integers(0, 1),
        provider=st.integers(0, 2),
        cls=st.sampled_from([ResourceClass.STORAGE, ResourceClass.BANDWIDTH]),
        units=st.integers(1, 50),
        term=st.integers(1, 8),
        escrow=st.integers(1, 3 * ONE_NUX // 100),
    )
    def open(
        self, consumer: int, provider: int, cls: ResourceClass, units: int, term: int, escrow: int
    ) -> None:
        c = self.w.consumers[consumer]
        p = self.w.providers[provider]
        got: list[int] = []

        async def call() -> None:
            got.append(await c.open_lease(p.address, cls, units, term, PRICES[cls], escrow))

        def predict(_: Lease | None, __: int) -> Deltas:
            return Counter({c.address: -escrow, self.w.lm_address: escrow})

        if self.attempt(None, Action.OPEN, call, predict):
            self.leases.append(got[0])
            assert self.lease(got[0]).state is LeaseState.TICKETED

    @rule(i=st.integers(0, 50), right=st.booleans(), hot=st.booleans())
    def accept(self, i: int, right: bool, hot: bool) -> None:
        lid = self.pick(i)
        if lid is None:
            return
        who = self.party(self.lease(lid).provider, operator=hot)
        who = who if right else self.wrong(who)
        self.attempt(lid, Action.ACCEPT, lambda: who.accept(lid), lambda _l, _e: Counter())

    @rule(i=st.integers(0, 50))
    def decline(self, i: int) -> None:
        lid = self.pick(i)
        if lid is None:
            return
        who = self.party(self.lease(lid).provider, operator=True)
        self.attempt(
            lid,
            Action.DECLINE,
            lambda: who.decline(lid),
            lambda ls, _e: Counter({ls.consumer: ls.escrow, self.w.lm_address: -ls.escrow}),
        )

    @rule(i=st.integers(0, 50), right=st.booleans())
    def cancel(self, i: int, right: bool) -> None:
        lid = self.pick(i)
        if lid is None:
            return
        lease = self.lease(lid)
        who = self.party(lease.consumer)
        who = who if right else self.wrong(who)
        action = Action.WITHDRAW if lease.state is LeaseState.TICKETED else Action.CANCEL

        def predict(ls: Lease | None, _e: int) -> Deltas:
            assert ls is not None
            if ls.state is LeaseState.TICKETED:
                return Counter({ls.consumer: ls.escrow, self.w.lm_address: -ls.escrow})
            return self.ext_refund(ls)

        self.attempt(lid, action, lambda: who.cancel(lid), predict)

    @rule(i=st.integers(0, 50))
    def expire_ticket(self, i: int) -> None:
        lid = self.pick(i)
        if lid is None:
            return
        self.attempt(
            lid,
            Action.EXPIRE_TICKET,
            lambda: self.w.outsider.expire_ticket(lid),
            lambda ls, _e: Counter({ls.consumer: ls.escrow, self.w.lm_address: -ls.escrow}),
        )

    @rule(i=st.integers(0, 50), epochs=st.integers(1, 5), amount=st.integers(0, ONE_NUX // 100))
    def extend(self, i: int, epochs: int, amount: int) -> None:
        lid = self.pick(i)
        if lid is None:
            return
        c = self.party(self.lease(lid).consumer)
        self.attempt(
            lid,
            Action.EXTEND,
            lambda: c.extend(lid, epochs, amount),
            lambda ls, _e: Counter({ls.consumer: -amount, self.w.lm_address: amount}),
        )

    @rule(i=st.integers(0, 50), choice=st.sampled_from(["accept", "decline", "expire"]))
    def answer_extension(self, i: int, choice: str) -> None:
        lid = self.pick(i)
        if lid is None:
            return
        p = self.party(self.lease(lid).provider, operator=True)
        if choice == "accept":
            self.attempt(
                lid,
                Action.ACCEPT_EXTENSION,
                lambda: p.accept_extension(lid),
                lambda _l, _e: Counter(),
            )
        elif choice == "decline":
            self.attempt(
                lid,
                Action.DECLINE_EXTENSION,
                lambda: p.decline_extension(lid),
                lambda ls, _e: self.ext_refund(ls),
            )
        else:
            self.attempt(
                lid,
                Action.EXPIRE_EXTENSION,
                lambda: self.w.outsider.expire_extension(lid),
                lambda ls, _e: self.ext_refund(ls),
            )

    @rule(i=st.integers(0, 50), amount=st.integers(1, ONE_NUX // 100))
    def top_up(self, i: int, amount: int) -> None:
        lid = self.pick(i)
        if lid is None:
            return
        c = self.party(self.lease(lid).consumer)
        self.attempt(
            lid,
            Action.TOP_UP,
            lambda: c.top_up(lid, amount),
            lambda ls, _e: Counter({ls.consumer: -amount, self.w.lm_address: amount}),
        )

    @rule(i=st.integers(0, 50), right=st.booleans())
    def claim(self, i: int, right: bool) -> None:
        lid = self.pick(i)
        if lid is None:
            return
        who = self.party(self.lease(lid).provider, operator=True)
        who = who if right else self.wrong(who)

        def predict(ls: Lease | None, e: int) -> Deltas:
            assert ls is not None
            amt = due(ls, time_accrual_entitlement(ls, e)) - ls.paid
            return Counter({ls.provider: amt, self.w.lm_address: -amt})

        if self.attempt(lid, Action.CLAIM, lambda: who.claim(lid), predict):
            ls = self.lease(lid)
            assert ls.paid <= min(ls.escrow, time_accrual_entitlement(ls, self.epoch_now()))

    @rule(i=st.integers(0, 50))
    def end_term(self, i: int) -> None:
        lid = self.pick(i)
        if lid is None:
            return
        self.attempt(
            lid,
            Action.END_TERM,
            lambda: self.w.outsider.end_term(lid),
            lambda ls, _e: self.ext_refund(ls),
        )

    @rule(i=st.integers(0, 50))
    def settle(self, i: int) -> None:
        lid = self.pick(i)
        if lid is None:
            return

        def predict(ls: Lease | None, e: int) -> Deltas:
            assert ls is not None
            return self.settlement(ls, e)

        self.attempt(lid, Action.SETTLE, lambda: self.w.outsider.settle(lid), predict)

    @rule(i=st.integers(0, 50))
    def fault(self, i: int) -> None:
        lid = self.pick(i)
        if lid is None:
            return
        w = self.w
        module = w.conn.contract("TestFaultModule", w.deployment.modules["bandwidth"])
        data = module.encode_abi("fault", args=[w.lm_address, lid, b"fault".ljust(32, b"\0")])
        lease = self.lease(lid)
        info = self.run(w.deployer.provider(lease.provider))
        fails = lease.faults + 1 >= PARAMS.fail_threshold
        action = Action.FAIL if fails else Action.CLAIM  # a warning leaves the state unchanged

        async def call() -> None:
            await w.conn.queue(w.outsider.account).send({"to": module.address, "data": data})

        def predict(ls: Lease | None, e: int) -> Deltas:
            assert ls is not None
            out: Deltas = Counter()
            if fails:
                out = self.ext_refund(ls) + Counter()
                out.update(self.settlement(ls, e))
                out[ls.consumer] += 0
            if min(info.faults + 1, 255) >= PARAMS.slash_after:
                cut = min(info.stake, PARAMS.slash_cap)
                out[ls.consumer] += cut
                out[w.registry_address] -= cut
            return out

        self.attempt(lid, action, call, predict)

    @rule(seconds=st.integers(1, 900))
    def advance(self, seconds: int) -> None:
        self.run(self.w.conn.advance_time(seconds))

    # ------------------------------------------------------------------ invariants

    @invariant()
    def supply_conserved(self) -> None:
        assert sum(self.balances().values()) == self.supply

    @invariant()
    def escrow_held_matches_model(self) -> None:
        d = self.w.deployer
        assert self.run(d.balance(self.w.lm_address)) == self.held
        stakes = sum(self.run(d.provider(p.address)).stake for p in self.w.providers)
        assert self.run(d.balance(self.w.registry_address)) == stakes

    @invariant()
    def nobody_paid_more_than_owed(self) -> None:
        e = self.epoch_now()
        for lid in self.leases:
            ls = self.lease(lid)
            assert ls.paid <= ls.escrow
            if not ls.state.is_terminal:
                assert ls.paid <= max(time_accrual_entitlement(ls, e), 0)


def test_lease_invariants(env: Env) -> None:
    LeaseMachine.env = env
    run_state_machine_as_test(
        LeaseMachine,
        settings=settings(
            max_examples=env.examples,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
