"""Storage leases on the real StorageSettlement module: revisions both sides sign, block-hash
seeds, sampled epochs proven with a leaf and its Merkle paths, pay confirmed by `advance`,
demands and missed proofs, and the batched time-stamp anchor."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from nuclux.chain import ChainConnection
from nuclux.chain.revision import Revision, SignedRevision
from nuclux.core.challenge import (
    StorageProof,
    challenged_leaf,
    challenged_share,
    is_sampled,
    seed_from_block_hash,
)
from nuclux.core.lease import LeaseState
from nuclux.core.merkle import LEAF_BYTES
from nuclux.core.types import ONE_NUX, ResourceClass
from nuclux.errors import InvalidArgument, InvalidLeaseState, NotAuthorized, UsageError
from tests.chain.storage_kit import STORAGE_PARAMS, Holding, expected_paid_epochs
from tests.chain.world import PRICES, World, build_world

STORAGE = ResourceClass.STORAGE
ONE_IN = STORAGE_PARAMS.sample_one_in
UNITS = 10
PER_EPOCH = UNITS * PRICES[STORAGE]


@pytest_asyncio.fixture(scope="module")
async def storage_world() -> AsyncIterator[World]:
    conn = await ChainConnection.open("embedded")
    w = await build_world(conn, default_modules=True, params=STORAGE_PARAMS)
    yield w
    await conn.close()


@pytest_asyncio.fixture
async def sw(storage_world: World) -> AsyncIterator[World]:
    snap = await storage_world.conn.snapshot()
    yield storage_world
    await storage_world.conn.revert(snap)


def shares(n: int, seed: int = 1) -> list[bytes]:
    """Shares of varied sizes: whole leaves, a short last leaf, a single short leaf."""
    rng = random.Random(seed)
    sizes = [3 * LEAF_BYTES + 200, LEAF_BYTES, 7 * LEAF_BYTES, 10, 2 * LEAF_BYTES + 1]
    return [rng.randbytes(sizes[i % len(sizes)]) for i in range(n)]


async def active(w: World, term: int = 20, escrow: int = ONE_NUX) -> int:
    lid = await w.consumers[0].open_lease(
        w.providers[0].address, STORAGE, UNITS, term, PRICES[STORAGE], escrow
    )
    await w.operators[0].accept(lid)
    return lid


async def holding(w: World, n: int = 5) -> Holding:
    h = Holding(await active(w), shares(n))
    await h.commit(w.consumers[0], w.operators[0], submitter=w.operators[0])
    return h


async def sampled_epoch(w: World, lid: int, want: bool = True) -> tuple[int, int]:
    """Seed epochs from the current one on until one is (or is not) sampled for ``lid``;
    (epoch, seed). Every epoch passed over gets its seed, so `advance` can decide it."""
    e = await w.epoch()
    for _ in range(40):
        info = await w.outsider.seed(e)
        seed = info.value or await w.seed_epoch(e)
        if await w.outsider.is_sampled(lid, e) == want:
            return e, seed
        e = await w.next_epoch()
    raise AssertionError("no such epoch in 40 tries")


async def missed_by_now(w: World, lid: int, seeds: dict[int, int], proven: set[int]) -> set[int]:
    """The sampled epochs whose proof deadline has passed unproven."""
    now, end = await w.epoch(), (await w.outsider.lease(lid)).end_epoch
    out = set()
    for e, seed in seeds.items():
        recorded = (await w.outsider.seed(e)).recorded_epoch
        if (
            e not in proven
            and now > recorded + 1
            and is_sampled(seed, lid, ONE_IN, last_epoch=e + 1 == end)
        ):
            out.add(e)
    return out


# ---------------------------------------------------------------------- challenge derivation


async def test_python_and_solidity_draw_the_same_challenges(sw: World) -> None:
    module = sw.conn.contract("StorageSettlement", sw.deployment.modules["storage"])
    rng = random.Random(2026)
    for _ in range(120):
        seed = rng.randrange(1, 2**64)
        lid = rng.choice([1, 2, 3, rng.randrange(2**256)])
        count = rng.choice([1, 2, 3, 7, 1000, rng.randrange(1, 2**40)])
        leaves = rng.choice([1, 2, 5, 1024, rng.randrange(1, 2**48)])
        assert await module.functions.sampledBy(seed, lid).call() == is_sampled(seed, lid, ONE_IN)
        on_chain = await module.functions.challengeOf(seed, lid, count, leaves).call()
        assert tuple(on_chain) == (
            challenged_share(seed, lid, count),
            challenged_leaf(seed, lid, leaves),
        )


async def test_a_recorded_seed_is_its_block_hash(sw: World) -> None:
    e = await sw.next_epoch()
    seed = await sw.seed_epoch(e)
    info = await sw.outsider.seed(e)
    block = await sw.conn.w3.eth.get_block(info.target)
    assert seed == info.value == seed_from_block_hash(bytes(block["hash"]))
    assert info.recorded_epoch == await sw.epoch()


# ---------------------------------------------------------------------- seeds


async def test_seeds_are_fixed_in_advance_and_never_zero(sw: World) -> None:
    w, x = sw, sw.outsider
    e = await w.next_epoch()
    with pytest.raises(InvalidLeaseState, match="EpochNotStarted"):
        await x.arm_seed(e + 1)
    with pytest.raises(InvalidLeaseState, match="SeedNotArmed"):
        await x.record_seed(e)
    await x.arm_seed(e)
    with pytest.raises(InvalidLeaseState, match="SeedAlreadyArmed"):
        await x.arm_seed(e)
    with pytest.raises(InvalidLeaseState, match="SeedNotReady"):
        await x.record_seed(e)  # its block is not mined yet
    for _ in range(STORAGE_PARAMS.seed_delay + 257):
        await w.conn.mine()
    with pytest.raises(InvalidLeaseState, match="ZeroSeed"):
        await x.record_seed(e)  # more than 256 blocks old: lost for good
    assert (await x.seed(e)).value == 0


async def test_a_lost_seed_pays_nothing_and_forfeits_the_run(sw: World) -> None:
    w, op = sw, sw.operators[0]
    lid = await active(w)
    lease = await op.lease(lid)
    seeds: dict[int, int] = {lease.start_epoch: await w.seed_epoch(lease.start_epoch)}
    proven: set[int] = set()
    lost = await w.next_epoch()
    await op.arm_seed(lost)  # armed, never recorded
    for _ in range(STORAGE_PARAMS.seed_delay + 257):
        await w.conn.mine()
    for _ in range(6):
        e = await w.next_epoch()
        seeds[e] = await w.seed_epoch(e)
        if await op.is_sampled(lid, e):
            await op.prove(lid, e, None)
            proven.add(e)
    await w.next_epoch()
    book = await op.advance(lid)
    missed = await missed_by_now(w, lid, seeds, proven) | {lost}
    now = await w.epoch()
    want = expected_paid_epochs(
        lid, lease.start_epoch, lease.end_epoch, now, seeds, proven, missed, ONE_IN
    )
    assert (book.paid_epochs, book.run, book.cursor) == want
    assert book.cursor == now  # nothing left undecided before the current epoch


# ---------------------------------------------------------------------- revisions


async def test_a_revision_needs_both_signatures_and_must_be_newer(sw: World) -> None:
    w = sw
    c, p, op, x = w.consumers[0], w.providers[0], w.operators[0], w.outsider
    h = Holding(await active(w), shares(3))
    rev = h.next_revision()
    with pytest.raises(NotAuthorized, match="NotOwnerOrOperator"):  # consumer only
        await c.submit_revision(SignedRevision(rev, c.sign_revision(rev), x.sign_revision(rev)))
    with pytest.raises(NotAuthorized, match="BadSignature"):  # provider only
        await op.submit_revision(SignedRevision(rev, op.sign_revision(rev), op.sign_revision(rev)))
    other = dataclasses.replace(rev, used_bytes=rev.used_bytes + 1)
    with pytest.raises(NotAuthorized, match="BadSignature"):  # signed a different revision
        await x.submit_revision(SignedRevision(rev, c.sign_revision(other), op.sign_revision(rev)))
    await x.submit_revision(SignedRevision(rev, c.sign_revision(rev), p.sign_revision(rev)))
    book = await x.storage_book(h.lease_id)
    assert (book.revision, book.share_count, book.root) == (1, 3, rev.root)
    assert book.cursor == (await x.lease(h.lease_id)).start_epoch
    with pytest.raises(InvalidLeaseState, match="StaleRevision"):
        await x.submit_revision(SignedRevision(rev, c.sign_revision(rev), p.sign_revision(rev)))
    # a signature is for one lease
    lid2 = await active(w)
    moved = dataclasses.replace(rev, lease_id=lid2)
    with pytest.raises(NotAuthorized, match="BadSignature"):
        await x.submit_revision(SignedRevision(moved, c.sign_revision(rev), op.sign_revision(rev)))
    # deleting a share is a newer revision with fewer shares
    h.revision = 1
    h.shares.pop()
    await h.commit(c, op, submitter=c)
    assert (await x.storage_book(h.lease_id)).share_count == 2


def test_revision_values_are_bounded() -> None:
    with pytest.raises(UsageError):
        Revision(1, 0, 0, 0, bytes(32))
    with pytest.raises(UsageError):
        Revision(0, 1, 0, 0, bytes(32))
    with pytest.raises(UsageError):
        Revision(1, 1, 0, 2**40, bytes(32))
    with pytest.raises(UsageError):
        Revision(1, 1, 0, 1, b"short")


# ---------------------------------------------------------------------- proofs


async def test_a_member_leaf_proves_and_anything_else_is_refused(sw: World) -> None:
    w = sw
    op, x = w.operators[0], w.outsider
    h = await holding(w, n=5)
    lid = h.lease_id
    e, seed = await sampled_epoch(w, lid)
    good = h.proof(seed)
    index = h.challenged(seed)
    leaf = challenged_leaf(seed, lid, good.leaf_count)

    flipped = bytes([good.leaf[0] ^ 1]) + good.leaf[1:]
    cases: list[tuple[StorageProof, str]] = [
        (dataclasses.replace(good, leaf=flipped), "check=4"),  # wrong leaf bytes
        (dataclasses.replace(good, leaf_count=good.leaf_count + 1), "BadProof"),  # wrong count
    ]
    if good.share_path:
        tampered = (bytes(32), *good.share_path[1:])
        cases.append((dataclasses.replace(good, share_path=tampered), "check=4"))
        # packed, a share path one hash short takes the lease path's first: the lease path
        # then runs past the end of the proof
        cases.append((dataclasses.replace(good, share_path=good.share_path[:-1]), "check=3"))
    cases.append((dataclasses.replace(good, lease_path=(*good.lease_path, bytes(32))), "check=3"))
    zeros = tuple(bytes(32) for _ in good.lease_path)
    cases.append((dataclasses.replace(good, lease_path=zeros), "check=4"))
    # a genuine leaf of another share, or another leaf of the challenged share
    other = (index + 1) % len(h.shares)
    cases.append((h.proof(seed, share_index=other), "BadProof"))
    data = h.shares[index]
    if good.leaf_count > 1:
        j = (leaf + 1) % good.leaf_count
        wrong = dataclasses.replace(good, leaf=data[j * LEAF_BYTES : (j + 1) * LEAF_BYTES])
        cases.append((wrong, "BadProof"))
    for proof, reason in cases:
        with pytest.raises(InvalidArgument, match=reason):
            await x.prove(lid, e, proof)
    with pytest.raises(InvalidLeaseState, match="SeedNotArmed"):
        await op.prove(lid, e + 1, good)  # an epoch without a seed
    receipt = await x.prove(lid, e, good)  # anyone may carry the provider's proof
    module = w.conn.contract("StorageSettlement", w.deployment.modules["storage"])
    (ev,) = module.events.EpochProven().process_receipt(receipt)
    assert (ev["args"]["id"], ev["args"]["epoch"], ev["args"]["revision"]) == (lid, e, 1)
    book = await x.storage_book(lid)
    assert book.proven >> (e - book.cursor) & 1


async def test_malformed_packed_proofs_are_refused(sw: World) -> None:
    """The packed encoding (uint64 leafCount || uint16 leafLength || leaf || paths) read
    byte by byte: every malformed variant reverts with the check it fails, and the good one
    still proves afterwards (nothing was recorded)."""
    w = sw
    x = w.outsider
    h = await holding(w, n=5)
    lid = h.lease_id
    e, seed = await sampled_epoch(w, lid)
    good = h.proof(seed).encode()
    count = good[:8]
    cases = [
        (b"", "check=5"),  # no proof for a lease with shares
        (good[:9], "check=5"),  # shorter than its header
        (bytes(8) + good[8:], "check=1"),  # no leaves
        (count + (0).to_bytes(2, "big") + good[10:], "check=1"),  # an empty leaf
        (count + (LEAF_BYTES + 1).to_bytes(2, "big") + good[10:], "check=1"),  # too long
        (count + (LEAF_BYTES).to_bytes(2, "big") + bytes(LEAF_BYTES - 1), "check=5"),  # past it
        (good[:-1], "check=3"),  # the last hash cut short
        (good + bytes(1), "check=3"),  # a byte too many
    ]
    for packed, reason in cases:
        with pytest.raises(InvalidArgument, match=reason):
            await x.prove_packed(lid, e, packed)
    with pytest.raises(InvalidArgument, match=r"BadProof\(id=0, check=5\)"):
        await x.send_packed("prove", lid.to_bytes(8, "big") + e.to_bytes(3, "big"), "short")
    with pytest.raises(InvalidArgument, match=r"BadProof\(id=0, check=5\)"):
        await x.send_packed("answerDemand", lid.to_bytes(7, "big"), "short")  # no whole id
    with pytest.raises(UsageError, match=r"below 2\*\*64"):
        await x.prove_packed(2**64, e, good)
    await x.prove_packed(lid, e, good)
    book = await x.storage_book(lid)
    assert book.proven >> (e - book.cursor) & 1


async def test_proofs_follow_the_latest_revision(sw: World) -> None:
    w = sw
    c, op = w.consumers[0], w.operators[0]
    h = await holding(w, n=4)
    e, seed = await sampled_epoch(w, h.lease_id)
    stale = h.proof(seed)
    h.shares.append(shares(1, seed=9)[0])
    newer = await h.commit(c, op)  # signed, not yet on chain
    fresh = h.proof(seed)
    with pytest.raises(InvalidArgument, match="BadProof"):
        await op.prove(h.lease_id, e, fresh)  # the chain still has revision 1
    await op.prove(h.lease_id, e, fresh, revision=newer)  # one transaction: submit + prove
    assert (await op.storage_book(h.lease_id)).revision == 2
    with pytest.raises(InvalidLeaseState, match="StaleRevision"):
        await op.prove(h.lease_id, e, fresh, revision=newer)
    with pytest.raises(UsageError, match="another lease"):
        await op.prove(h.lease_id + 1, e, fresh, revision=newer)
    e2, seed2 = await sampled_epoch(w, h.lease_id)
    old = Holding(h.lease_id, h.shares[:4])
    with pytest.raises(InvalidArgument, match="BadProof"):
        await op.prove(h.lease_id, e2, old.proof(seed2))  # a proof for revision 1 is stale
    with pytest.raises(InvalidArgument, match="BadProof"):
        await op.prove(h.lease_id, e2, stale)
    await op.prove(h.lease_id, e2, h.proof(seed2))


async def test_proof_deadlines_and_the_cursor_window(sw: World) -> None:
    w = sw
    op = w.operators[0]
    h = await holding(w, n=2)
    e, seed = await sampled_epoch(w, h.lease_id)
    await w.next_epoch()
    await w.next_epoch()  # the end of the epoch after the seed's has passed
    with pytest.raises(InvalidLeaseState, match="ProofTooLate"):
        await op.prove(h.lease_id, e, h.proof(seed))
    book = await op.advance(h.lease_id)
    assert book.cursor == e + 1  # decided (missed); the next epoch has no seed yet
    await w.seed_epoch(e + 1)  # a past epoch may still be seeded, from a block ahead
    if await op.is_sampled(h.lease_id, e + 1):
        await op.prove(h.lease_id, e + 1, h.proof((await op.seed(e + 1)).value))
    e2, seed2 = await sampled_epoch(w, h.lease_id)
    await op.prove(h.lease_id, e2, h.proof(seed2))
    await w.next_epoch()
    await op.advance(h.lease_id)
    with pytest.raises(InvalidLeaseState, match="EpochDecided"):
        await op.prove(h.lease_id, e2, h.proof(seed2))


async def test_an_empty_lease_is_proven_by_the_call_alone(sw: World) -> None:
    w = sw
    op = w.operators[0]
    lid = await active(w)  # no revision on chain: the lease holds nothing yet
    e, _ = await sampled_epoch(w, lid)
    await op.prove(lid, e, None)
    book = await op.storage_book(lid)
    assert book.cursor == (await op.lease(lid)).start_epoch
    assert book.proven >> (e - book.cursor) & 1


# ---------------------------------------------------------------------- pay


async def test_claims_pay_exactly_the_epochs_proofs_vouch_for(sw: World) -> None:
    w = sw
    op, p, c = w.operators[0], w.providers[0], w.consumers[0]
    h = await holding(w, n=3)
    lid = h.lease_id
    start = (await op.lease(lid)).start_epoch
    seeds: dict[int, int] = {}
    proven: set[int] = set()
    skipped = False
    e = start
    for i in range(10):
        seeds[e] = await w.seed_epoch(e)
        if await op.is_sampled(lid, e):
            if not skipped and i >= 3:
                skipped = True  # miss one sampled epoch on purpose
            else:
                await op.prove(lid, e, h.proof(seeds[e]))
                proven.add(e)
        e = await w.next_epoch()
    await w.next_epoch()
    now = await w.epoch()
    missed = await missed_by_now(w, lid, seeds, proven)
    end = (await op.lease(lid)).end_epoch
    paid, run, cursor = expected_paid_epochs(lid, start, end, now, seeds, proven, missed, ONE_IN)
    assert (await op.claimable(lid))[0] == 0  # nothing confirmed before `advance`
    book = await op.advance(lid)
    assert (book.paid_epochs, book.run, book.cursor) == (paid, run, cursor)
    assert (await op.claimable(lid))[0] == paid * PER_EPOCH
    p0, c0 = await p.balance(), await c.balance()
    if paid:
        assert await w.outsider.claim(lid) == paid * PER_EPOCH
    assert await p.balance() == p0 + paid * PER_EPOCH
    # cancel and settle: the last epoch is always sampled and vouches for the run before it
    await c.cancel(lid)
    lease = await op.lease(lid)
    last = lease.end_epoch - 1
    for x in range(cursor, lease.end_epoch):
        if x not in seeds:
            seeds[x] = await w.seed_epoch(x)  # late, from a block ahead: allowed
            if await op.is_sampled(lid, x):
                await op.prove(lid, x, h.proof(seeds[x]))
                proven.add(x)
    assert await op.is_sampled(lid, last)
    assert last in proven
    await w.next_epoch()
    book = await op.advance(lid)
    now = await w.epoch()
    total, _, _ = expected_paid_epochs(
        lid, start, lease.end_epoch, now, seeds, proven, missed, ONE_IN
    )
    assert (book.paid_epochs, book.cursor, book.run) == (total, lease.end_epoch, 0)
    await w.conn.advance_time(STORAGE_PARAMS.dispute_window + 1)
    with pytest.raises(InvalidLeaseState, match="SubmissionClosed"):
        await op.advance(lid)  # the window is over: the book is final
    await c.settle(lid)
    assert await p.balance() == p0 + total * PER_EPOCH
    assert await c.balance() == c0 + ONE_NUX - total * PER_EPOCH
    assert await c.balance(w.lm_address) == 0


async def test_advance_is_batched_and_stops_at_undecided_epochs(sw: World) -> None:
    w = sw
    op = w.operators[0]
    lid = await active(w, term=30)
    start = (await op.lease(lid)).start_epoch
    for e in range(start, start + 6):
        await w.seed_epoch(e)
        if await op.is_sampled(lid, e):
            await op.prove(lid, e, None)
        await w.next_epoch()
    await w.next_epoch()  # two unseeded epochs follow: advance must stop at the first
    cursors = []
    for _ in range(3):
        cursors.append((await op.advance(lid, max_epochs=2)).cursor)
    assert cursors == [start + 2, start + 4, start + 6]
    assert (await op.advance(lid, max_epochs=50)).cursor == start + 6  # unseeded: stop
    with pytest.raises(UsageError):
        await op.advance(lid, max_epochs=0)


# ---------------------------------------------------------------------- disputes


async def test_a_demanded_proof_answered_in_time_is_no_fault(sw: World) -> None:
    w = sw
    c, op = w.consumers[0], w.operators[0]
    h = await holding(w, n=4)
    lid = h.lease_id
    with pytest.raises(NotAuthorized, match="NotConsumer"):
        await op.demand_proof(lid, 1)
    with pytest.raises(InvalidArgument, match="NoSuchShare"):
        await c.demand_proof(lid, 4)
    with pytest.raises(InvalidLeaseState, match="NoDemand"):
        await op.answer_demand(lid, None)
    # from an epoch's start: the rest (about 15 blocks, a second each) stays in that epoch,
    # which the one-demand-per-epoch check at the end needs
    await w.next_epoch()
    await c.demand_proof(lid, 2)
    with pytest.raises(InvalidLeaseState, match="DemandOpen"):
        await c.demand_proof(lid, 1)
    demand = await c.open_demand(lid)
    assert demand is not None
    assert demand.share_index == 2
    for _ in range(STORAGE_PARAMS.seed_delay + 1):
        await w.conn.mine()
    await c.record_demand_seed(lid)
    demand = await c.open_demand(lid)
    assert demand is not None
    assert demand.seed
    with pytest.raises(InvalidArgument, match="BadProof"):
        await op.answer_demand(lid, h.proof(demand.seed, share_index=1))  # not the demanded
    await op.answer_demand(lid, h.proof(demand.seed, share_index=2))
    assert await c.open_demand(lid) is None
    with pytest.raises(InvalidLeaseState, match="OneDemandPerEpoch"):
        await c.demand_proof(lid, 0)
    assert (await c.lease(lid)).faults == 0


async def test_missed_demands_are_faults_and_mark_the_share(sw: World) -> None:
    w = sw
    c, op, x = w.consumers[0], w.operators[0], w.outsider
    h = await holding(w, n=3)
    lid = h.lease_id
    for round_ in range(STORAGE_PARAMS.fail_threshold):
        await w.next_epoch()
        await c.demand_proof(lid, round_)
        with pytest.raises(InvalidLeaseState, match="DemandNotDue"):
            await x.report_missed_demand(lid)
        await w.conn.advance_time(STORAGE_PARAMS.demand_window + 1)
        demand = await c.open_demand(lid)
        assert demand is not None
        with pytest.raises(InvalidLeaseState, match="ProofTooLate"):
            await op.answer_demand(lid, h.proof(1, share_index=round_))
        failed = await x.report_missed_demand(lid)
        assert await x.is_suspect(lid, 1, round_)
        lease = await c.lease(lid)
        assert lease.faults == round_ + 1
        assert failed is (round_ + 1 == STORAGE_PARAMS.fail_threshold)
    assert lease.state is LeaseState.FAILED
    assert not await x.is_suspect(lid, 1, 2 + 1)
    with pytest.raises(InvalidLeaseState, match="NoDemand"):
        await x.report_missed_demand(lid)


async def test_a_demand_in_the_dispute_window_must_fit_in_it(sw: World) -> None:
    w = sw
    c = w.consumers[0]
    h = await holding(w, n=2)
    await c.cancel(h.lease_id)
    await w.conn.advance_time(STORAGE_PARAMS.dispute_window - STORAGE_PARAMS.demand_window + 5)
    with pytest.raises(InvalidLeaseState, match="SubmissionClosed"):
        await c.demand_proof(h.lease_id, 0)


# ---------------------------------------------------------------------- time-stamps


async def test_anchor_records_the_first_time_a_root_is_seen(sw: World) -> None:
    w = sw
    a, b = w.consumers[0], w.consumers[1]
    root = bytes(range(32))
    assert await a.anchored_at(root) is None
    receipt = await a.anchor(root)
    block = await w.conn.w3.eth.get_block(receipt["blockNumber"])
    assert await b.anchored_at(root) == (int(block["timestamp"]), int(receipt["blockNumber"]))
    with pytest.raises(InvalidArgument, match="AlreadyAnchored"):
        await b.anchor(root)
    with pytest.raises(UsageError):
        await a.anchor(bytes(32))
    with pytest.raises(UsageError):
        await a.anchored_at(b"short")
