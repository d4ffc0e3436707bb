"""The node proves storage by itself: proofs built from the store's blocks and block roots,
sampled epochs proven by the lease agent and accepted by StorageSettlement on the embedded
chain, demands answered, and a node that lost a share's blocks missing its demand (a fault)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from nuclux.chain import ChainConnection
from nuclux.chain.revision import Revision, SignedRevision
from nuclux.core.challenge import build_proof, is_sampled
from nuclux.core.merkle import LEAF_BYTES, leaf_count, leaf_hashes, root_of_bytes
from nuclux.core.reference import block_object_id
from nuclux.core.types import ONE_NUX, ResourceClass
from nuclux.core.units import GIB
from nuclux.errors import IntegrityError
from nuclux.node.agent import LeaseAgent
from nuclux.node.follower import ChainView
from nuclux.node.prover import Prover, build_share_proof
from nuclux.node.revisions import RevisionDesk, RevisionSigner
from nuclux.node.shares import BlockRow, RevisionRequest, ShareEntry, lease_root, summarise_share
from nuclux.node.store import ShardStore
from nuclux.node.store_types import blob_relpath
from tests.chain.storage_kit import STORAGE_PARAMS
from tests.chain.world import PRICES, World, build_world

B = 4096


def blocks_of(data: bytes, block_bytes: int = B) -> list[bytes]:
    return [data[i : i + block_bytes] for i in range(0, len(data), block_bytes)]


def test_block_proofs_equal_whole_share_proofs() -> None:
    """A proof from one block plus the block roots is the proof core.challenge builds from
    the whole share, for every leaf, in multi-block and one-block shares."""
    shares = [os.urandom(3 * B + 1500), os.urandom(700), os.urandom(2 * B)]
    entries = [
        ShareEntry(bytes(16), i, root_of_bytes(s), leaf_count(len(s)), len(s))
        for i, s in enumerate(shares)
    ]
    pairs = [(e.root, e.leaf_count) for e in entries]
    for si, share in enumerate(shares):
        blocks = blocks_of(share)
        summary = summarise_share(
            bytes(16), si, [BlockRow(j, len(b), root_of_bytes(b)) for j, b in enumerate(blocks)]
        )
        per_block = summary.block_bytes // LEAF_BYTES
        for leaf in range(entries[si].leaf_count):
            block = blocks[leaf // per_block]
            ours = build_share_proof(
                entries, si, leaf, summary.block_bytes, summary.block_roots, block
            )
            data = share[leaf * LEAF_BYTES : (leaf + 1) * LEAF_BYTES]
            assert ours == build_proof(pairs, si, leaf, leaf_hashes(share), data)
    damaged = bytearray(blocks_of(shares[0])[1])
    damaged[5] ^= 1
    summary = summarise_share(
        bytes(16),
        0,
        [BlockRow(j, len(b), root_of_bytes(b)) for j, b in enumerate(blocks_of(shares[0]))],
    )
    with pytest.raises(IntegrityError, match="damaged"):
        build_share_proof(entries, 0, 5, B, summary.block_roots, bytes(damaged))


# ------------------------------------------------------------------ on the embedded chain


@pytest_asyncio.fixture(scope="module")
async def storage_world() -> AsyncIterator[World]:
    conn = await ChainConnection.open("embedded")
    w = await build_world(conn, default_modules=True, params=STORAGE_PARAMS)
    yield w
    await conn.close()


@dataclass
class Node:
    world: World
    store: ShardStore
    view: ChainView
    agent: LeaseAgent
    prover: Prover
    lease: int
    root: Path

    async def tick(self) -> None:
        await self.view.catch_up()
        await self.agent.tick()

    async def mine_past_seed_delay(self) -> None:
        for _ in range(self.world.deployment.params.seed_delay + 1):
            await self.world.conn.mine()

    async def store_shares(
        self,
        shares: list[bytes],
        *,
        fid: bytes = bytes(range(16)),
        keep: tuple[ShareEntry, ...] = (),
        revision: int = 1,
    ) -> list[ShareEntry]:
        """Upload the shares' blocks (file ``fid``, share i = position) and have the node
        co-sign a revision listing ``keep`` and them (it stays off chain: the node submits it
        when it needs to)."""
        entries = list(keep)
        for i, data in enumerate(shares):
            for j, block in enumerate(blocks_of(data)):
                async with self.store.writer(self.lease, block_object_id(fid, i, j)) as out:
                    await out.write(block)
                    await out.commit()
            entries.append(
                ShareEntry(fid, i, root_of_bytes(data), leaf_count(len(data)), len(data))
            )
        w = self.world
        used = sum(e.size for e in entries)
        rev = Revision(self.lease, revision, used, len(entries), lease_root(entries))
        signer = RevisionSigner.for_ledger(w.operators[0])
        desk = RevisionDesk(self.store, signer, lambda: 0)
        req = RevisionRequest(
            revision,
            tuple(e.key for e in entries),
            (),
            rev.used_bytes,
            rev.root,
            w.consumers[0].sign_revision(rev),
        )
        await desk.co_sign(self.lease, w.consumers[0].address, req)
        return entries

    async def submit_latest(self) -> None:
        """The consumer puts the node's latest co-signed revision on chain (as in a dispute)."""
        latest = await self.store.latest_revision(self.lease)
        assert latest is not None
        rev = Revision(
            self.lease, latest.revision, latest.used_bytes, latest.share_count, latest.root
        )
        await self.world.consumers[0].submit_revision(
            SignedRevision(rev, latest.consumer_sig, latest.provider_sig)
        )


@pytest_asyncio.fixture
async def node(storage_world: World, tmp_path: Path) -> AsyncIterator[Node]:
    w = storage_world
    snap = await w.conn.snapshot()
    try:
        await w.next_epoch()  # a whole epoch ahead: no boundary falls inside a test step
        lid = await w.consumers[0].open_lease(
            w.providers[0].address, ResourceClass.STORAGE, 1, 3, PRICES[0], 10 * ONE_NUX
        )
        await w.operators[0].accept(lid)
        view = ChainView(w.deployer)
        store = await ShardStore.open(tmp_path / "store", 8 * GIB, grace_seconds=60)
        await store.set_lease(lid, GIB, None)
        assert Prover.supported(w.operators[0])
        prover = Prover(w.operators[0], store)
        agent = LeaseAgent(w.providers[0].address, w.operators[0], view, store, prover=prover)
        try:
            yield Node(w, store, view, agent, prover, lid, tmp_path / "store")
        finally:
            await store.close()
            view.close()
    finally:
        await w.conn.revert(snap)


async def test_the_agent_proves_sampled_epochs_and_gets_paid(node: Node) -> None:
    n, w = node, node.world
    await n.store_shares([os.urandom(3 * B + 1500), os.urandom(700), os.urandom(2 * B)])
    lease = await w.deployer.lease(n.lease)
    one_in = w.deployment.params.sample_one_in
    sampled = []
    for e in range(lease.start_epoch, lease.end_epoch):
        assert await w.epoch() == e
        await n.tick()  # arms the epoch's seed
        await n.mine_past_seed_delay()
        await n.tick()  # records it and, if the epoch is sampled, proves it
        seed = (await w.deployer.seed(e)).value
        assert seed != 0
        if is_sampled(seed, n.lease, one_in, last_epoch=e + 1 == lease.end_epoch):
            sampled.append(e)
            book = await w.deployer.storage_book(n.lease)
            assert (book.proven >> (e - book.cursor)) & 1, f"epoch {e} was not proven"
        await w.next_epoch()
    assert sampled
    assert sampled[-1] == lease.end_epoch - 1  # the last epoch always is
    await n.tick()  # the term is over: every epoch can be decided
    book = await w.deployer.storage_book(n.lease)
    assert book.revision == 1  # the node submitted its revision with its first proof
    assert (book.cursor, book.paid_epochs) == (lease.end_epoch, 3)
    assert n.prover.stats.epochs_proven == len(sampled)
    assert n.prover.stats.revisions_submitted == 1
    assert n.prover.stats.failures == 0
    assert n.agent.stats.errors == 0
    assert (await w.deployer.claimable(n.lease))[1] == 3 * PRICES[0]  # 3 epochs x 1 unit


async def test_a_demand_is_answered_against_the_newest_revision(node: Node) -> None:
    n, w = node, node.world
    first = await n.store_shares([os.urandom(B + 10), os.urandom(3000)])
    await n.submit_latest()  # revision 1 on chain: the consumer may demand
    other = bytes(range(1, 17))
    await n.store_shares([os.urandom(5000)], fid=other, keep=tuple(first), revision=2)
    await w.consumers[0].demand_proof(n.lease, 1)
    await n.mine_past_seed_delay()
    await n.tick()
    assert await w.deployer.open_demand(n.lease) is None
    assert n.prover.stats.demands_answered == 1
    assert (await w.deployer.storage_book(n.lease)).revision == 2  # submitted first


async def test_a_node_that_lost_a_share_misses_its_demand(node: Node) -> None:
    n, w = node, node.world
    lost = os.urandom(2 * B + 5)
    await n.store_shares([os.urandom(B), lost])
    await n.submit_latest()
    for j in range(3):  # the disk loses share 1's blocks
        info = await n.store.stat(n.lease, block_object_id(bytes(range(16)), 1, j))
        (n.root / blob_relpath(info.sha256)).unlink()
    await w.consumers[0].demand_proof(n.lease, 1)
    await n.mine_past_seed_delay()
    await n.tick()
    demand = await w.deployer.open_demand(n.lease)
    assert demand is not None  # unanswered
    assert n.prover.stats.failures == 1
    await w.conn.advance_time(w.deployment.params.demand_window + 1)
    await n.tick()  # past the deadline the node does not try again
    assert n.prover.stats.failures == 1
    assert await w.consumers[0].report_missed_demand(n.lease) is False  # one fault so far
    assert await w.deployer.is_suspect(n.lease, 1, 1)
    assert (await w.deployer.lease(n.lease)).faults == 1
