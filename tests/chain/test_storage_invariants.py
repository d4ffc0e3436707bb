"""Stateful invariant test of storage leases: hypothesis drives the real StorageSettlement.

Steps open and accept storage leases holding a few shares, move through epochs (seeding
them, or leaving them unseeded and seeding them late), prove sampled epochs (or try a
tampered proof), sign and submit new revisions, advance the pay cursor in small batches,
claim, demand proofs and let demands lapse (faults), report conflicting revisions the provider
signed (faults, or refused repeats), cancel, end terms and settle. An
independent model (``tests.chain.storage_kit.expected_paid_epochs``) recomputes every
lease's pay from the seeds and the proofs made; after every step we check:

- NuxCoin is conserved, the LeaseManager holds exactly deposits - payments - refunds and
  the registry exactly the stakes;
- each lease's book (paid epochs, open run, cursor) is what the model gives for that cursor:
  the contract never pays an epoch the pay rule does not, nor skips one it does;
- nobody is paid more than owed: paid <= min(escrow, paid epochs x units x price), and every
  claim and settlement moves exactly the predicted amounts;
- a fault (a lapsed demand, a conflict) that reaches the slashing step pays exactly
  min(stake, cap) to the lease's consumer, and one that fails the lease settles it as the
  model says;
- a refused step (a tampered proof, a closed lease, a wrong party, a conflict reported twice)
  changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import random
from collections import Counter
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from nuclux.chain import ChainConnection
from nuclux.chain.ledger import StorageBook
from nuclux.core.challenge import is_sampled, seed_from_block_hash
from nuclux.core.lease import Lease, LeaseState
from nuclux.core.merkle import LEAF_BYTES
from nuclux.core.types import ResourceClass
from nuclux.errors import ContractRevert, UsageError
from tests.chain.storage_kit import STORAGE_PARAMS, Holding, expected_paid_epochs
from tests.chain.world import PRICES, World, build_world

P = STORAGE_PARAMS
STORAGE = ResourceClass.STORAGE
PRICE = PRICES[STORAGE]
OPEN = (LeaseState.ACTIVE, LeaseState.ACTIVE_TICKETED, LeaseState.CLOSING)
EXAMPLES = int(os.environ.get("NUCLUX_INVARIANT_EXAMPLES", "3"))


class Env:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.conn: ChainConnection = self.run(ChainConnection.open("embedded"))
        self.world: World = self.run(build_world(self.conn, default_modules=True, params=P))

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
class Tracked:
    holding: Holding
    proven: set[int] = field(default_factory=set)
    conflicts: set[int] = field(default_factory=set)  # revision numbers reported

    @property
    def lid(self) -> int:
        return self.holding.lease_id


class StorageMachine(RuleBasedStateMachine):
    env: Env

    def __init__(self) -> None:
        super().__init__()
        self.w = self.env.world
        self.snap = self.env.run(self.w.conn.snapshot())
        self.supply = self.run(self.w.deployer.total_supply())
        self.held = self.run(self.w.deployer.balance(self.w.lm_address))
        self.leases: list[Tracked] = []
        self.seeds: dict[int, tuple[int, int]] = {}  # epoch -> (seed, epoch it was recorded)
        self.rng = random.Random(0)

    def teardown(self) -> None:
        self.env.run(self.w.conn.revert(self.snap))

    # ------------------------------------------------------------------ helpers

    def run(self, aw: Awaitable[Any]) -> Any:
        return self.env.run(aw)

    def now(self) -> int:
        e: int = self.run(self.w.epoch())
        return e

    def lease(self, t: Tracked) -> Lease:
        lease: Lease = self.run(self.w.deployer.lease(t.lid))
        return lease

    def book(self, t: Tracked) -> StorageBook:
        book: StorageBook = self.run(self.w.deployer.storage_book(t.lid))
        return book

    def pick(self, i: int) -> Tracked | None:
        return self.leases[i % len(self.leases)] if self.leases else None

    def balances(self) -> dict[str, int]:
        return {a: self.run(self.w.deployer.balance(a)) for a in self.w.holders()}

    def model(self, t: Tracked, limit: int | None = None) -> tuple[int, int, int]:
        lease, now = self.lease(t), self.now()
        seeds = {e: s for e, (s, _) in self.seeds.items()}
        missed = {e for e, (_, r) in self.seeds.items() if e not in t.proven and now > r + 1}
        return expected_paid_epochs(
            t.lid, lease.start_epoch, lease.end_epoch, now, seeds, t.proven, missed,
            P.sample_one_in, limit,
        )  # fmt: skip

    def is_open(self, lease: Lease) -> bool:
        if lease.state is LeaseState.CLOSING:
            return bool(self.run(self.w.conn.now()) < lease.deadline)
        return lease.state in OPEN

    def seed(self, epoch: int) -> None:
        value = self.run(self.w.seed_epoch(epoch))
        self.seeds[epoch] = (value, self.now())

    def expect(self, call: Awaitable[Any], ok: bool, deltas: Counter[str] | None = None) -> bool:
        """Run ``call``; it must succeed iff ``ok``, moving exactly ``deltas`` if it does and
        nothing (no balance, no lease, no book) if it does not."""
        bal0 = self.balances()
        books0 = [self.book(t) for t in self.leases]
        leases0 = [self.lease(t) for t in self.leases]
        try:
            self.run(call)
            done = True
        except (ContractRevert, UsageError):
            done = False
        assert done is ok, f"expected {'success' if ok else 'refusal'}"
        bal1 = self.balances()
        if not done:
            assert bal1 == bal0
            assert [self.book(t) for t in self.leases] == books0
            assert [self.lease(t) for t in self.leases] == leases0
            return False
        want = deltas or Counter()
        for a in bal0:
            assert bal1[a] - bal0[a] == want.get(a, 0), (a, want)
        self.held += want.get(self.w.lm_address, 0)
        return True

    def payout(self, lease: Lease, book: StorageBook) -> Counter[str]:
        """What settling (or failing) the lease now moves."""
        due = max(lease.paid, min(lease.escrow, book.paid_epochs * lease.units * lease.price))
        return Counter(
            {
                lease.provider: due - lease.paid,
                lease.consumer: lease.escrow - due,
                self.w.lm_address: -(lease.escrow - lease.paid),
            }
        )

    # ------------------------------------------------------------------ rules

    @rule(
        consumer=st.integers(0, 1),
        provider=st.integers(0, 2),
        units=st.integers(1, 20),
        term=st.integers(1, 6),
        epochs_paid=st.integers(1, 8),
        n_shares=st.integers(1, 3),
    )
    def open(
        self, consumer: int, provider: int, units: int, term: int, epochs_paid: int, n_shares: int
    ) -> None:
        c, op = self.w.consumers[consumer], self.w.operators[provider]
        escrow = units * PRICE * epochs_paid + self.rng.randrange(PRICE)
        info = self.run(c.provider(self.w.providers[provider].address))
        if info.suspended_until > self.run(self.w.conn.now()):
            return
        lid: int = self.run(c.open_lease(info.owner, STORAGE, units, term, PRICE, escrow))
        self.held += escrow
        self.run(op.accept(lid))
        sizes = [self.rng.choice([10, LEAF_BYTES, 3 * LEAF_BYTES + 7]) for _ in range(n_shares)]
        h = Holding(lid, [self.rng.randbytes(n) for n in sizes])
        self.run(h.commit(c, op, submitter=c))
        self.leases.append(Tracked(h))

    @rule(seed=st.booleans())
    def next_epoch(self, seed: bool) -> None:
        e: int = self.run(self.w.next_epoch())
        if seed:
            self.seed(e)

    @rule(back=st.integers(0, 6))
    def seed_late(self, back: int) -> None:
        """Seed an epoch that nobody seeded in time (its block is fixed only now)."""
        e = self.now() - back
        if e not in self.seeds and self.run(self.w.outsider.seed(e)).target == 0:
            self.seed(e)

    @rule(i=st.integers(0, 50), tamper=st.booleans())
    def prove(self, i: int, tamper: bool) -> None:
        t = self.pick(i)
        if t is None:
            return
        lease, book, now = self.lease(t), self.book(t), self.now()
        todo = [
            e
            for e, (s, _) in self.seeds.items()
            if lease.start_epoch <= e < lease.end_epoch
            and e not in t.proven
            and is_sampled(s, t.lid, P.sample_one_in, last_epoch=e + 1 == lease.end_epoch)
        ]
        if not todo:
            return
        e = max(todo)
        seed, recorded = self.seeds[e]
        proof = t.holding.proof(seed)
        if tamper:
            proof = type(proof)(proof.leaf_count, bytes([proof.leaf[0] ^ 1]) + proof.leaf[1:],
                                proof.share_path, proof.lease_path)  # fmt: skip
        ok = not tamper and now <= recorded + 1 and 0 <= e - book.cursor < 56
        op = self.w.operators[self.w.providers.index(self.party(lease.provider))]
        if self.expect(op.prove(t.lid, e, proof), ok):
            t.proven.add(e)

    def party(self, address: str) -> Any:
        for p in self.w.providers:
            if p.address == address:
                return p
        raise AssertionError(address)

    @rule(i=st.integers(0, 50), add=st.booleans(), by_provider=st.booleans())
    def revise(self, i: int, add: bool, by_provider: bool) -> None:
        t = self.pick(i)
        if t is None:
            return
        lease = self.lease(t)
        h = t.holding
        before = (list(h.shares), h.revision)
        if add:
            h.shares.append(self.rng.randbytes(self.rng.choice([5, LEAF_BYTES, 2 * LEAF_BYTES])))
        elif len(h.shares) > 1:
            h.shares.pop(self.rng.randrange(len(h.shares)))
        c = next(x for x in self.w.consumers if x.address == lease.consumer)
        op = self.w.operators[self.w.providers.index(self.party(lease.provider))]
        signed = self.run(h.commit(c, op))
        if not self.expect((op if by_provider else c).submit_revision(signed), self.is_open(lease)):
            h.shares, h.revision = before

    @rule(i=st.integers(0, 50), n=st.integers(1, 8))
    def advance(self, i: int, n: int) -> None:
        t = self.pick(i)
        if t is None:
            return
        lease, cursor = self.lease(t), self.book(t).cursor or self.lease(t).start_epoch
        if self.expect(self.w.outsider.advance(t.lid, n), self.is_open(lease)):
            book = self.book(t)
            assert (book.paid_epochs, book.run, book.cursor) == self.model(t, cursor + n)

    @rule(i=st.integers(0, 50))
    def claim(self, i: int) -> None:
        t = self.pick(i)
        if t is None:
            return
        lease, book = self.lease(t), self.book(t)
        due = max(lease.paid, min(lease.escrow, book.paid_epochs * lease.units * lease.price))
        amount = due - lease.paid
        ok = lease.state in OPEN and amount > 0
        deltas = Counter({lease.provider: amount, self.w.lm_address: -amount})
        self.expect(self.w.outsider.claim(t.lid), ok, deltas)

    @rule(i=st.integers(0, 50), share=st.integers(0, 3))
    def demand(self, i: int, share: int) -> None:
        t = self.pick(i)
        if t is None:
            return
        lease = self.lease(t)
        c = next(x for x in self.w.consumers if x.address == lease.consumer)
        with contextlib.suppress(ContractRevert):  # refusals are unit-tested
            self.run(c.demand_proof(t.lid, share))

    @rule(i=st.integers(0, 50))
    def answer(self, i: int) -> None:
        t = self.pick(i)
        if t is None:
            return
        demand = self.run(self.w.outsider.open_demand(t.lid))
        if demand is None:
            return
        for _ in range(P.seed_delay + 1):
            self.run(self.w.conn.mine())
        block = self.run(self.w.conn.w3.eth.get_block(demand.target))
        proof = t.holding.proof(seed_from_block_hash(bytes(block["hash"])), demand.share_index)
        lease = self.lease(t)
        op = self.w.operators[self.w.providers.index(self.party(lease.provider))]
        late = self.run(self.w.conn.now()) + 1 > demand.deadline
        self.expect(op.answer_demand(t.lid, proof), not late)

    @rule(i=st.integers(0, 50))
    def report_missed(self, i: int) -> None:
        t = self.pick(i)
        if t is None:
            return
        demand = self.run(self.w.outsider.open_demand(t.lid))
        if demand is None:
            return
        self.run(self.w.conn.advance_time(max(0, demand.deadline - self.run(self.w.conn.now()))))
        lease, book = self.lease(t), self.book(t)
        ok = lease.state in OPEN
        deltas = self.fault_deltas(lease, book) if ok else None
        self.expect(self.w.outsider.report_missed_demand(t.lid), ok, deltas)

    def fault_deltas(self, lease: Lease, book: StorageBook) -> Counter[str]:
        """What one more fault on an open lease moves: the lease's payout if it fails, and
        the capped slash from the registry to the consumer at the slashing step."""
        info = self.run(self.w.deployer.provider(lease.provider))
        deltas: Counter[str] = Counter()
        if lease.faults + 1 >= P.fail_threshold:
            deltas.update(self.payout(lease, book))
        if min(info.faults + 1, 255) >= P.slash_after:
            cut = min(info.stake, P.slash_cap)
            deltas[lease.consumer] += cut
            deltas[self.w.registry_address] -= cut
        return deltas

    @precondition(lambda self: bool(self.leases))
    @rule(
        i=st.integers(0, 50),
        first=st.integers(1, 4),
        count=st.integers(1, 3),
        by_consumer=st.booleans(),
    )
    def report_conflicts(self, i: int, first: int, count: int, by_consumer: bool) -> None:
        """The provider's operator signed two different revisions with each of the numbers
        first .. first + count - 1; each is reported (a fault) unless it was before."""
        t = self.leases[i % len(self.leases)]
        for number in range(first, first + count):
            lease, book = self.lease(t), self.book(t)
            op = self.w.operators[self.w.providers.index(self.party(lease.provider))]
            a = dataclasses.replace(t.holding.next_revision(), revision=number)
            b = dataclasses.replace(a, used_bytes=a.used_bytes + 1)
            c = next(x for x in self.w.consumers if x.address == lease.consumer)
            who = c if by_consumer else self.w.outsider
            ok = lease.state in OPEN and number not in t.conflicts
            deltas = self.fault_deltas(lease, book) if ok else None
            call = who.report_conflict(a, op.sign_revision(a), b, op.sign_revision(b))
            if self.expect(call, ok, deltas):
                t.conflicts.add(number)

    @rule(i=st.integers(0, 50), right=st.booleans())
    def cancel(self, i: int, right: bool) -> None:
        t = self.pick(i)
        if t is None:
            return
        lease = self.lease(t)
        c = next(x for x in self.w.consumers if x.address == lease.consumer)
        who = c if right else self.w.outsider
        ok = right and lease.state in (LeaseState.ACTIVE, LeaseState.ACTIVE_TICKETED)
        self.expect(who.cancel(t.lid), ok)

    @rule(i=st.integers(0, 50))
    def end_term(self, i: int) -> None:
        t = self.pick(i)
        if t is None:
            return
        lease = self.lease(t)
        ok = lease.state is LeaseState.ACTIVE and self.now() >= lease.end_epoch
        self.expect(self.w.outsider.end_term(t.lid), ok)

    @rule(i=st.integers(0, 50))
    def settle(self, i: int) -> None:
        t = self.pick(i)
        if t is None:
            return
        lease, book = self.lease(t), self.book(t)
        ok = lease.state is LeaseState.CLOSING and self.run(self.w.conn.now()) >= lease.deadline
        self.expect(self.w.outsider.settle(t.lid), ok, self.payout(lease, book) if ok else None)

    @rule(seconds=st.integers(1, 2 * P.epoch_length))
    def wait(self, seconds: int) -> None:
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
    def books_follow_the_pay_rule(self) -> None:
        for t in self.leases:
            book, lease = self.book(t), self.lease(t)
            if book.cursor == 0:
                continue
            assert (book.paid_epochs, book.run, book.cursor) == self.model(t, book.cursor)
            assert lease.paid <= lease.escrow
            assert lease.paid <= book.paid_epochs * lease.units * lease.price


def test_storage_lease_invariants(env: Env) -> None:
    StorageMachine.env = env
    run_state_machine_as_test(
        StorageMachine,
        settings=settings(
            max_examples=EXAMPLES,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
