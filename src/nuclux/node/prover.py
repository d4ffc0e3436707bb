"""The node's prover: it answers storage challenges on chain by itself.

Theory of operation
-------------------
``contracts/StorageSettlement.sol`` pays a storage lease per epoch, gated by proofs. Each
epoch has a seed: the hash of a block fixed when someone *arms* it (``armSeed``) and taken once
that block exists (``recordSeed``, or the first proof that needs it). Epoch ``e`` of lease
``L`` is *sampled* when ``keccak(seed, L) % sampleOneIn == 0`` (the term's last epoch always
is); a sampled epoch must be proven before the end of the epoch after the one its seed was
recorded in, or it and the run of unsampled epochs before it go unpaid. A consumer may also
*demand* a proof of one share; an unanswered demand is a fault.

Each ``tick`` (called by the lease agent's loop) does nothing unless a block was mined since
the last one that looked (chain state is all it acts on); then it walks every storage lease
this provider serves that still takes submissions (Active, ActiveTicketed, Closing before its
deadline):

1. epochs from the lease's pay cursor up to now (at most ``PROOF_WINDOW``): arm a seed that
   is not armed, record one whose block exists (every epoch needs its seed recorded before
   ``advance`` can decide it, sampled or not), and prove a sampled, unproven epoch still
   within its deadline;
2. an open demand: once its block exists, submit the node's newer revision if the chain has an
   older one (``answerDemand`` verifies against the chain's revision) and answer it;
3. ``advance`` the lease's pay cursor once its first undecided epoch can be decided.

A proof is built from the node's own latest co-signed revision (``ShardStore.latest_revision``):
the challenged share and leaf come from the seed (``nuclux.core.challenge``); the leaf's path to
the share root is its path inside its block (the block is read from the store and hashed)
followed by the block's path among the block roots the store computed on write; the share's
path to the lease root comes from the revision's entries. If that revision is newer than the
chain's, it goes in the same transaction (``proveWithRevision``). Every proof is checked locally
before it is sent: a node that lost or damaged the block cannot prove, and says so in its log
(the contract then treats the epoch as missed, or the demand as a fault).

Everything here runs on the event loop except reading and hashing the block (a thread).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from nuclux.chain import Ledger
from nuclux.chain.ledger import StorageBook
from nuclux.chain.revision import Revision, SignedRevision
from nuclux.core.challenge import (
    StorageProof,
    challenged_leaf,
    challenged_share,
    is_sampled,
    seed_from_block_hash,
)
from nuclux.core.lease import Lease, LeaseState
from nuclux.core.merkle import (
    LEAF_BYTES,
    entry_hash,
    inclusion_proof,
    leaf_hash,
    leaf_hashes,
    merkle_root,
    verify_inclusion,
)
from nuclux.core.reference import block_object_id
from nuclux.core.types import ResourceClass
from nuclux.errors import ChainError, IntegrityError, NucluxError
from nuclux.node.shares import ShareEntry, StoredRevision, share_name
from nuclux.node.store import ShardStore

log = logging.getLogger("nuclux.node.prover")

PROOF_WINDOW = 56  # StorageSettlement.PROOF_WINDOW: proofs at most this far past the cursor
BLOCKHASH_DEPTH = 256  # a seed not recorded within this many blocks of its block is lost
_LOST = (0, -1)  # a seed that can no longer be recorded
OPEN = (LeaseState.ACTIVE, LeaseState.ACTIVE_TICKETED, LeaseState.CLOSING)


@dataclass
class ProverStats:
    seeds_armed: int = 0
    seeds_recorded: int = 0
    epochs_proven: int = 0
    demands_answered: int = 0
    revisions_submitted: int = 0
    advances: int = 0
    failures: int = 0  # proofs the node could not build (lost or damaged data) or send


def build_share_proof(
    entries: Sequence[ShareEntry],
    share_index: int,
    leaf_index: int,
    block_bytes: int,
    block_roots: Sequence[bytes],
    block: bytes,
) -> StorageProof:
    """The proof of leaf ``leaf_index`` of share ``share_index`` of a revision's ``entries``,
    from that share's block roots and the bytes of the block holding the leaf.

    ``IntegrityError`` if the block does not hash to its root or the result does not verify
    against the share root and the lease root (damaged data: nothing worth sending)."""
    entry = entries[share_index]
    per_block = block_bytes // LEAF_BYTES
    j, k = divmod(leaf_index, per_block)
    if not 0 <= j < len(block_roots):
        raise IntegrityError(f"leaf {leaf_index} is beyond {share_name(entry.key)}")
    hashes = leaf_hashes(block)
    if not hashes or merkle_root(hashes) != block_roots[j]:
        raise IntegrityError(
            f"block {j} of {share_name(entry.key)} does not hash to its root: it is damaged"
        )
    leaf = bytes(block[k * LEAF_BYTES : (k + 1) * LEAF_BYTES])
    share_path = inclusion_proof(hashes, k) + inclusion_proof(block_roots, j)
    lease_hashes = [entry_hash(e.root, e.leaf_count) for e in entries]
    lease_path = inclusion_proof(lease_hashes, share_index)
    ok = verify_inclusion(
        leaf_hash(leaf), leaf_index, entry.leaf_count, share_path, entry.root
    ) and verify_inclusion(
        lease_hashes[share_index],
        share_index,
        len(entries),
        lease_path,
        merkle_root(lease_hashes),
    )
    if not ok:
        raise IntegrityError(f"the proof of {share_name(entry.key)} does not verify")
    return StorageProof(entry.leaf_count, leaf, share_path, lease_path)


def _signed(rev: StoredRevision) -> SignedRevision:
    return SignedRevision(
        Revision(rev.lease_id, rev.revision, rev.used_bytes, rev.share_count, rev.root),
        rev.consumer_sig,
        rev.provider_sig,
    )


@dataclass
class Prover:
    """Answers the storage challenges of one provider's leases (see the module docstring)."""

    ledger: Ledger  # signs with the operator key
    store: ShardStore
    stats: ProverStats = field(default_factory=ProverStats)
    _seeds: dict[int, tuple[int, int]] = field(default_factory=dict)  # epoch -> (seed, recorded)
    _proven: set[tuple[int, int]] = field(default_factory=set)  # (lease, epoch)
    _answered: set[tuple[int, int]] = field(default_factory=set)  # (lease, demand target)
    _advanced: dict[int, int] = field(default_factory=dict)  # lease -> cursor advanced from
    _last_head: int = -1  # the chain head of the last tick that looked

    @staticmethod
    def supported(ledger: Ledger) -> bool:
        """Whether storage leases settle through ``StorageSettlement`` on this deployment (a
        test deployment may use another module, which takes no proofs)."""
        try:
            module = ledger.deployment.address("StorageSettlement")
            return module.lower() == ledger.module_of(ResourceClass.STORAGE).lower()
        except NucluxError:
            return False

    @property
    def _params(self) -> tuple[int, int]:
        p = self.ledger.deployment.params
        return p.sample_one_in, p.seed_delay

    async def tick(self, leases: Sequence[Lease]) -> None:
        mine = [
            lease for lease in leases if lease.cls is ResourceClass.STORAGE and lease.state in OPEN
        ]
        if not mine:
            return
        head = await self.ledger.conn.block_number()
        if head == self._last_head:
            return  # nothing on chain changed since the last look
        self._last_head = head
        now_epoch = await self.ledger.epoch()
        for lease in mine:
            if lease.state is LeaseState.CLOSING and await self.ledger.conn.now() >= lease.deadline:
                continue  # the module takes nothing more
            try:
                await self._lease(lease, now_epoch)
            except NucluxError as exc:
                self.stats.failures += 1
                log.warning("storage proofs of lease %d: %s", lease.id, exc)
                if isinstance(exc, ChainError):
                    self._last_head = -1  # the chain refused or failed: look again next tick

    # ------------------------------------------------------------------ per lease

    async def _lease(self, lease: Lease, now_epoch: int) -> None:
        book = await self.ledger.storage_book(lease.id)
        cursor = book.cursor or lease.start_epoch
        last = min(now_epoch, lease.end_epoch - 1, cursor + PROOF_WINDOW - 1)
        first_decidable: bool | None = None  # can `advance` decide the cursor's epoch?
        for e in range(cursor, last + 1):
            seed = await self._seed(e)
            decidable = seed == _LOST and e < now_epoch  # the contract skips a lost seed
            if seed is not None and seed != _LOST:
                value, recorded = seed
                last_epoch = e + 1 == lease.end_epoch
                sampled = is_sampled(value, lease.id, self._params[0], last_epoch=last_epoch)
                proven = self._is_proven(book, lease.id, e)
                late = now_epoch > recorded + 1
                if sampled and not proven and not late:
                    await self._prove_epoch(lease, e, value, book)
                    proven = True
                    book = await self.ledger.storage_book(lease.id)
                decidable = e < now_epoch and (not sampled or proven or late)
            if e == cursor:
                first_decidable = decidable
        await self._demand(lease, book)
        if first_decidable and self._advanced.get(lease.id) != cursor:
            self._advanced[lease.id] = cursor
            await self.ledger.advance(lease.id)
            self.stats.advances += 1

    def _is_proven(self, book: StorageBook, lease_id: int, e: int) -> bool:
        if (lease_id, e) in self._proven:
            return True
        if book.cursor == 0 or e < book.cursor:
            return False
        return bool((book.proven >> (e - book.cursor)) & 1)

    async def _seed(self, e: int) -> tuple[int, int] | None:
        """Epoch ``e``'s (seed, recorded epoch), arming or recording it as needed; None while
        it is not available yet, ``_LOST`` once it never will be."""
        known = self._seeds.get(e)
        if known is not None:
            return known
        info = await self.ledger.seed(e)
        if info.value == 0 and info.target == 0:
            try:
                await self.ledger.arm_seed(e)
                self.stats.seeds_armed += 1
            except NucluxError as exc:  # another node armed it first: read it again next time
                log.info("arming the seed of epoch %d: %s", e, exc)
            return None
        if info.value == 0:
            head = await self.ledger.conn.block_number()
            if head > info.target + BLOCKHASH_DEPTH:
                return _LOST
            if head <= info.target:
                return None  # its block is not mined yet
            await self.ledger.record_seed(e)
            self.stats.seeds_recorded += 1
            info = await self.ledger.seed(e)
            if info.value == 0:
                return None
        self._seeds[e] = (info.value, info.recorded_epoch)
        return self._seeds[e]

    async def _revision_for(
        self, lease_id: int, book: StorageBook
    ) -> tuple[StoredRevision | None, bool]:
        """The revision to prove against and whether it must be submitted with the proof."""
        latest = await self.store.latest_revision(lease_id)
        if latest is None or latest.revision < book.revision:
            if book.revision == 0:
                return None, False  # no revision anywhere: the lease holds nothing
            raise IntegrityError(
                f"the chain holds revision {book.revision} of lease {lease_id}, newer than any "
                "this node has co-signed and kept: it cannot prove against it"
            )
        return latest, latest.revision > book.revision

    async def _prove_epoch(self, lease: Lease, e: int, seed: int, book: StorageBook) -> None:
        rev, submit = await self._revision_for(lease.id, book)
        proof: StorageProof | None = None
        if rev is not None and rev.entries:
            share = challenged_share(seed, lease.id, len(rev.entries))
            proof = await self._proof(lease.id, rev, share, seed)
        await self.ledger.prove(lease.id, e, proof, _signed(rev) if submit and rev else None)
        if submit:
            self.stats.revisions_submitted += 1
        self._proven.add((lease.id, e))
        self.stats.epochs_proven += 1
        log.info("proved epoch %d of lease %d", e, lease.id)

    async def _demand(self, lease: Lease, book: StorageBook) -> None:
        d = await self.ledger.open_demand(lease.id)
        if d is None or (lease.id, d.target) in self._answered:
            return
        if await self.ledger.conn.now() > d.deadline:
            return  # too late: a fault whoever reports it
        seed = d.seed
        if seed == 0:
            head = await self.ledger.conn.block_number()
            if head <= d.target:
                return  # the block that picks the leaf is not mined yet
            header = await self.ledger.block_header(d.target)
            if header is None:
                return
            seed = seed_from_block_hash(header.hash)
        rev, submit = await self._revision_for(lease.id, book)
        if submit and rev is not None:  # answerDemand verifies against the chain's revision
            await self.ledger.submit_revision(_signed(rev))
            self.stats.revisions_submitted += 1
        proof: StorageProof | None = None
        if rev is not None and rev.entries:
            proof = await self._proof(lease.id, rev, d.share_index % len(rev.entries), seed)
        await self.ledger.answer_demand(lease.id, proof)
        self._answered.add((lease.id, d.target))
        self.stats.demands_answered += 1
        log.info("answered the demand on lease %d", lease.id)

    async def _proof(
        self, lease_id: int, rev: StoredRevision, share_index: int, seed: int
    ) -> StorageProof:
        entry = rev.entries[share_index]
        summary = await self.store.share(lease_id, entry.file_id, entry.index)
        if summary is None or summary.root != entry.root:
            raise IntegrityError(
                f"{share_name(entry.key)} of lease {lease_id} is no longer stored as revision "
                f"{rev.revision} lists it"
            )
        leaf = challenged_leaf(seed, lease_id, entry.leaf_count)
        j = leaf // (summary.block_bytes // LEAF_BYTES)
        oid = block_object_id(entry.file_id, entry.index, j)
        last = summary.size - (summary.blocks - 1) * summary.block_bytes
        size = summary.block_bytes if j < summary.blocks - 1 else last
        data = await self.store.read_range(lease_id, oid, 0, size)
        return await asyncio.to_thread(
            build_share_proof,
            rev.entries,
            share_index,
            leaf,
            summary.block_bytes,
            summary.block_roots,
            data,
        )
