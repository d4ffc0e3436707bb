"""The compute lease account (``nuclux.core.compute_account``): admission, pending jobs,
countersigned usage updates and their money rules, unit by unit and as hypothesis-driven
sequences checked against an independent model."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from nuclux.core.compute_account import (
    MAX_LISTED_JOBS,
    MAX_TOTAL,
    CountersignRequired,
    EscrowExhausted,
    LeaseAccount,
    TooManyDeclined,
    UsageRejected,
    UsageState,
    UsageUpdate,
    charge,
)
from nuclux.core.job import ComputeBusy, ComputeError
from nuclux.errors import UsageError

PRICE = 10**15  # wei per million fuel: 1 NUX buys 10^9 fuel


def job(n: int) -> bytes:
    return n.to_bytes(32, "big")


def snapshot(acct: LeaseAccount) -> tuple[str, dict[bytes, int]]:
    """Everything an account holds, for 'a refusal changes nothing'."""
    return json.dumps(acct.to_json(), sort_keys=True), dict(acct.running)


def pay(acct: LeaseAccount, paid: tuple[bytes, ...], declined: tuple[bytes, ...] = ()) -> None:
    fuel, total = acct.expected_total(paid)
    acct.apply(UsageUpdate(acct.lease_id, acct.state.revision + 1, total, fuel, paid, declined))


# ------------------------------------------------------------------ charge


def test_charge_is_fuel_times_price_per_million_rounded_down() -> None:
    assert charge(1_000_000, 7) == 7
    assert charge(999_999, 7) == 6
    assert charge(0, 10**30) == 0
    assert charge(123_456_789, 1_000_000_000_000_007) == 123_456_789_000_000_864
    with pytest.raises(UsageError):
        charge(-1, PRICE)
    with pytest.raises(UsageError):
        charge(1, -1)


@given(st.lists(st.integers(0, 10**12), max_size=20), st.integers(0, 10**18))
def test_one_rounding_per_lease_never_charges_less_than_per_job_rounding(
    fuels: list[int], price: int
) -> None:
    whole = charge(sum(fuels), price)
    assert whole == sum(fuels) * price // 10**6
    assert whole >= sum(charge(f, price) for f in fuels)
    assert whole - sum(charge(f, price) for f in fuels) < max(len(fuels), 1)


# ------------------------------------------------------------------ admission


def test_admission_refusals_name_their_reason_and_change_nothing() -> None:
    acct = LeaseAccount(1, PRICE, units=2, escrow=charge(3_000_000, PRICE))
    acct.admit(job(1), 1_000_000)
    before = snapshot(acct)
    with pytest.raises(ComputeError, match="already runs"):
        acct.admit(job(1), 1)
    with pytest.raises(EscrowExhausted, match="top the lease up"):
        acct.admit(job(2), 2_000_001)
    assert snapshot(acct) == before
    acct.admit(job(2), 2_000_000)  # exactly the escrow
    assert acct.owed_at_most() == acct.escrow
    with pytest.raises(ComputeBusy, match="slots"):
        acct.admit(job(3), 0)
    acct.finish(job(1), 400_000, deterministic=False)
    acct.finish(job(2), 5_000_000, deterministic=False)  # clamped to its limit
    assert acct.pending[job(2)].fuel_used == 2_000_000
    with pytest.raises(CountersignRequired, match="countersignature"):
        acct.admit(job(3), 0)
    pay(acct, (job(1), job(2)))
    assert acct.state == UsageState(1, 2_400_000, charge(2_400_000, PRICE))
    acct.admit(job(3), 600_000)
    with pytest.raises(EscrowExhausted):
        acct.admit(job(4), 1)


def test_abort_forgets_a_job_that_never_ran() -> None:
    acct = LeaseAccount(1, PRICE, units=1, escrow=PRICE)
    acct.admit(job(1), 1_000_000)
    acct.abort(job(1))
    acct.abort(job(1))  # twice is harmless
    assert acct.running == {}
    assert acct.pending == {}
    with pytest.raises(ComputeError, match="not running"):
        acct.finish(job(1), 5, deterministic=False)
    acct.admit(job(1), 1_000_000)  # the slot and the escrow are free again


def test_negative_fuel_is_refused_or_charged_nothing() -> None:
    acct = LeaseAccount(1, PRICE, units=2, escrow=PRICE)
    before = snapshot(acct)
    with pytest.raises(UsageError, match="fuel limit"):
        acct.admit(job(1), -1)
    assert snapshot(acct) == before
    acct.admit(job(1), 1_000)
    acct.finish(job(1), -500, deterministic=False)
    assert acct.pending[job(1)].fuel_used == 0
    pay(acct, (job(1),))
    assert acct.state == UsageState(1, 0, 0)


def test_a_consumer_declining_too_many_jobs_gets_no_more() -> None:
    acct = LeaseAccount(1, PRICE, units=8, escrow=10**18)
    n = 0

    def run(k: int, det: bool = True) -> list[bytes]:
        nonlocal n
        ids = [job(n + i) for i in range(k)]
        n += k
        for j in ids:
            acct.admit(j, 10)
            acct.finish(j, 10, deterministic=det)
        return ids

    pay(acct, (), tuple(run(2)))  # two declines of two: within the grace
    pay(acct, tuple(run(7, det=False)))
    pay(acct, tuple(run(2, det=False)), tuple(run(1)))  # 3 of 12 declined: a quarter, served
    acct.admit(job(1000), 1)
    acct.abort(job(1000))
    pay(acct, (), tuple(run(1)))  # 4 of 13: more than a quarter
    before = snapshot(acct)
    with pytest.raises(TooManyDeclined, match="declined 4 of 13"):
        acct.admit(job(1000), 1)
    assert snapshot(acct) == before


# ------------------------------------------------------------------ usage updates


def test_usage_updates_that_do_not_match_are_rejected_and_change_nothing() -> None:
    acct = LeaseAccount(7, PRICE, units=4, escrow=10**18)
    for i, det in enumerate([False, True, False]):
        acct.admit(job(i), 10_000_000)
        acct.finish(job(i), 1_000_000 * (i + 1), deterministic=det)
    fuel, total = acct.expected_total((job(0),))
    assert (fuel, total) == (1_000_000, charge(1_000_000, PRICE))
    bad = {
        "lease 8, not 7": UsageUpdate(8, 1, total, fuel, (job(0),)),
        "revision": UsageUpdate(7, 2, total, fuel, (job(0),)),
        "not awaiting": UsageUpdate(7, 1, total, fuel, (job(9),)),
        "at least one": UsageUpdate(7, 1, 0, 0, ()),
        "cannot be declined": UsageUpdate(7, 1, 0, 0, (), (job(2),)),
        "1000000 fuel": UsageUpdate(7, 1, total + 1, fuel, (job(0),)),
        "wei": UsageUpdate(7, 1, total, fuel + 1, (job(0),)),
    }
    before = snapshot(acct)
    for why, update in bad.items():
        with pytest.raises(UsageRejected, match=why):
            acct.apply(update)
        assert snapshot(acct) == before, why
    acct.apply(UsageUpdate(7, 1, total, fuel, (job(0),), (job(1),)))
    assert acct.state == UsageState(1, fuel, total)
    assert list(acct.pending) == [job(2)]
    assert (acct.jobs_paid, acct.jobs_declined) == (1, 1)
    with pytest.raises(UsageRejected, match="not awaiting"):  # paid once only
        acct.apply(UsageUpdate(7, 2, total, fuel, (job(0),)))


def test_usage_update_fields_are_bounded() -> None:
    with pytest.raises(UsageError):
        UsageUpdate(0, 1, 0, 0, (job(1),))
    with pytest.raises(UsageError):
        UsageUpdate(1, 0, 0, 0, (job(1),))
    with pytest.raises(UsageError):
        UsageUpdate(1, 1, -1, 0, (job(1),))
    with pytest.raises(UsageError):
        UsageUpdate(1, 1, MAX_TOTAL + 1, 0, (job(1),))
    with pytest.raises(UsageError):
        UsageUpdate(1, 1, 0, -1, (job(1),))
    with pytest.raises(UsageError, match="32 bytes"):
        UsageUpdate(1, 1, 0, 0, (b"short",))
    with pytest.raises(UsageError, match="twice"):
        UsageUpdate(1, 1, 0, 0, (job(1),), (job(1),))
    with pytest.raises(UsageError, match="at most"):
        UsageUpdate(1, 1, 0, 0, tuple(job(i) for i in range(MAX_LISTED_JOBS + 1)))
    UsageUpdate(1, 1, MAX_TOTAL, 0, tuple(job(i) for i in range(MAX_LISTED_JOBS)))


ids = st.lists(st.binary(min_size=32, max_size=32), max_size=6, unique=True)


@given(
    st.integers(1, 2**255),
    st.integers(1, 2**64 - 1),
    st.integers(0, MAX_TOTAL),
    st.integers(0, 2**80),
    ids,
    ids,
)
def test_usage_update_json_round_trip(
    lease: int, revision: int, total: int, fuel: int, paid: list[bytes], declined: list[bytes]
) -> None:
    declined = [j for j in declined if j not in paid]
    u = UsageUpdate(lease, revision, total, fuel, tuple(paid), tuple(declined))
    assert UsageUpdate.from_json(json.loads(json.dumps(u.to_json()))) == u


@pytest.mark.parametrize(
    "body",
    [
        None,
        [],
        "x",
        {},
        {"lease": "1", "revision": 1, "cumulative": "1", "fuel_paid": "1"},
        {"lease": "1", "revision": 1, "cumulative": "1", "fuel_paid": "1", "paid": ["zz"]},
        {"lease": "x", "revision": 1, "cumulative": "1", "fuel_paid": "1", "paid": []},
        {"lease": "1", "revision": 1, "cumulative": "1", "fuel_paid": "1", "paid": [7]},
        {"lease": "1", "revision": 0, "cumulative": "1", "fuel_paid": "1", "paid": []},
    ],
)
def test_malformed_usage_updates_are_usage_errors(body: Any) -> None:
    with pytest.raises(UsageError):
        UsageUpdate.from_json(body)


@pytest.mark.parametrize("body", [None, {}, {"lease": "1"}, {"lease": "1", "price": "p"}])
def test_malformed_accounts_are_usage_errors(body: Any) -> None:
    with pytest.raises(UsageError, match="malformed lease account"):
        LeaseAccount.from_json(body)


# ------------------------------------------------------------------ sequences


@dataclass
class Model:
    """What the account should hold, kept independently of it."""

    units: int
    price: int
    escrow: int
    revision: int = 0
    fuel_paid: int = 0
    running: dict[bytes, int] = field(default_factory=dict)
    pending: dict[bytes, tuple[int, bool]] = field(default_factory=dict)
    paid: int = 0
    declined: int = 0

    def exposure(self, extra: int = 0) -> int:
        fuel = self.fuel_paid + sum(f for f, _ in self.pending.values())
        return charge(fuel + sum(self.running.values()) + extra, self.price)

    def refusal(self, limit: int) -> type[Exception] | None:
        if self.declined > 2 and self.declined * 4 > self.paid + self.declined:
            return TooManyDeclined
        if len(self.pending) >= self.units:
            return CountersignRequired
        if len(self.running) >= self.units:
            return ComputeBusy
        if self.exposure(limit) > self.escrow:
            return EscrowExhausted
        return None


def pick(keys: list[bytes], i: int) -> bytes:
    return sorted(keys)[i % len(keys)]


def subset(keys: list[bytes], mask: int) -> tuple[bytes, ...]:
    return tuple(k for b, k in enumerate(sorted(keys)) if mask >> b & 1)


class AccountMachine(RuleBasedStateMachine):
    acct: LeaseAccount
    model: Model

    def __init__(self) -> None:
        super().__init__()
        self.next_job = 0
        self.last = UsageState()

    @initialize(
        units=st.integers(1, 4),
        price=st.integers(0, 10**16),
        escrow=st.integers(0, 10**17),
    )
    def start(self, units: int, price: int, escrow: int) -> None:
        self.acct = LeaseAccount(5, price, units, escrow)
        self.model = Model(units, price, escrow)

    def refused(self, call: Any, kind: type[Exception], *args: Any) -> None:
        before = snapshot(self.acct)
        with pytest.raises(kind) as caught:
            call(*args)
        assert type(caught.value) is kind
        assert snapshot(self.acct) == before

    # ------------------------------------------------------------------ rules

    @rule(limit=st.integers(0, 2 * 10**8))
    def admit(self, limit: int) -> None:
        self.next_job += 1
        j = job(self.next_job)
        expected = self.model.refusal(limit)
        if expected is not None:
            self.refused(self.acct.admit, expected, j, limit)
            return
        self.acct.admit(j, limit)
        self.model.running[j] = limit
        assert self.acct.owed_at_most() <= self.acct.escrow

    @precondition(lambda self: self.model.running)
    @rule(i=st.integers(0, 7))
    def admit_again(self, i: int) -> None:
        j = pick(list(self.model.running), i)
        self.refused(self.acct.admit, ComputeError, j, 1)

    @precondition(lambda self: self.model.running)
    @rule(i=st.integers(0, 7), used=st.integers(0, 3 * 10**8), det=st.booleans())
    def finish(self, i: int, used: int, det: bool) -> None:
        j = pick(list(self.model.running), i)
        limit = self.model.running.pop(j)
        self.acct.finish(j, used, det)
        self.model.pending[j] = (min(used, limit), det)

    @precondition(lambda self: self.model.running)
    @rule(i=st.integers(0, 7))
    def abort(self, i: int) -> None:
        j = pick(list(self.model.running), i)
        del self.model.running[j]
        self.acct.abort(j)

    @rule(pay_mask=st.integers(0, 255), decline_mask=st.integers(0, 255))
    def countersign(self, pay_mask: int, decline_mask: int) -> None:
        m = self.model
        paid = subset(list(m.pending), pay_mask)
        declined = subset(
            [k for k, (_, d) in m.pending.items() if d and k not in paid], decline_mask
        )
        fuel = m.fuel_paid + sum(m.pending[j][0] for j in paid)
        total = charge(fuel, m.price)
        update = UsageUpdate(5, m.revision + 1, total, fuel, paid, declined)
        if not paid and not declined:
            self.refused(self.acct.apply, UsageRejected, update)
            return
        assert self.acct.apply(update) == UsageState(m.revision + 1, fuel, total)
        m.revision, m.fuel_paid = m.revision + 1, fuel
        m.paid += len(paid)
        m.declined += len(declined)
        for j in paid + declined:
            del m.pending[j]

    @precondition(lambda self: self.model.pending)
    @rule(
        i=st.integers(0, 7),
        how=st.sampled_from(["revision", "stale", "total", "fuel", "lease", "decline", "unknown"]),
    )
    def bad_update(self, i: int, how: str) -> None:
        m = self.model
        j = pick(list(m.pending), i)
        fuel = m.fuel_paid + m.pending[j][0]
        total = charge(fuel, m.price)
        lease, rev = 5, m.revision + 1
        paid: tuple[bytes, ...] = (j,)
        declined: tuple[bytes, ...] = ()
        if how == "revision":
            rev += 1
        elif how == "stale":
            if m.revision == 0:
                return
            rev = m.revision
        elif how == "total":
            total += 1
        elif how == "fuel":
            fuel += 1
        elif how == "lease":
            lease = 6
        elif how == "decline":
            if m.pending[j][1]:
                return  # deterministic jobs may be declined
            paid, declined, fuel, total = (), (j,), m.fuel_paid, charge(m.fuel_paid, m.price)
        else:
            paid = (job(10**9),)
        update = UsageUpdate(lease, rev, total, fuel, paid, declined)
        self.refused(self.acct.apply, UsageRejected, update)

    @rule()
    def restart(self) -> None:
        """The node restarts: the account comes back from its JSON; running jobs are lost
        (nothing is owed for them)."""
        body = json.loads(json.dumps(self.acct.to_json()))
        self.acct = LeaseAccount.from_json(body)
        assert self.acct.to_json() == body
        self.model.running.clear()

    # ------------------------------------------------------------------ invariants

    @invariant()
    def matches_the_model(self) -> None:
        if not hasattr(self, "acct"):
            return
        a, m = self.acct, self.model
        assert a.state.revision == m.revision
        assert a.state.fuel_paid == m.fuel_paid
        assert a.running == m.running
        assert {k: (p.fuel_used, p.deterministic) for k, p in a.pending.items()} == m.pending
        assert (a.jobs_paid, a.jobs_declined) == (m.paid, m.declined)

    @invariant()
    def money_rules(self) -> None:
        if not hasattr(self, "acct"):
            return
        a = self.acct
        s = a.state
        assert s.cumulative == charge(s.fuel_paid, a.price)
        assert s.revision >= self.last.revision
        assert s.fuel_paid >= self.last.fuel_paid
        assert s.cumulative >= self.last.cumulative
        assert a.owed_at_most() <= a.escrow
        assert s.cumulative <= a.escrow
        self.last = s


AccountMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40)
test_account_sequences = AccountMachine.TestCase
