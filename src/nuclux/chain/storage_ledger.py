"""The storage settlement module's side of a ledger: signed revisions, seeds, sampled-epoch
proofs, pay cursors, demanded proofs, conflicting revisions (a provable fault), the module's
events, and the batched time-stamp anchor (``docs/spec/storage-proofs.md``)."""

from __future__ import annotations

from eth_typing import HexStr
from web3.contract import AsyncContract
from web3.logs import DISCARD
from web3.types import TxParams, TxReceipt

from nuclux.chain.ledger_base import LedgerBase
from nuclux.chain.logs import event_topics
from nuclux.chain.records import ChainEvent, ConflictReport, DemandInfo, SeedInfo, StorageBook
from nuclux.chain.revision import Revision, SignedRevision, sign_revision
from nuclux.core.challenge import StorageProof
from nuclux.core.types import ResourceClass
from nuclux.errors import ChainError, UsageError


class StorageLedger(LedgerBase):
    # ------------------------------------------------------------------ storage proofs

    def _storage(self) -> AsyncContract:
        return self.conn.contract("StorageSettlement", self.module_of(ResourceClass.STORAGE))

    def sign_revision(self, rev: Revision) -> bytes:
        """This account's signature over a storage revision for the storage module."""
        module = self.module_of(ResourceClass.STORAGE)
        return sign_revision(self.account, rev, self.conn.chain_id, module)

    async def submit_revision(self, signed: SignedRevision) -> TxReceipt:
        """Record a newer revision both sides signed (anyone may submit it)."""
        rev = signed.revision
        return await self._send(
            self._storage(),
            "submitRevision",
            [rev.lease_id, rev.as_args(), signed.consumer_sig, signed.provider_sig],
            f"submit revision {rev.revision} of lease {rev.lease_id}",
        )

    async def storage_book(self, lease_id: int) -> StorageBook:
        """The storage module's record of a lease: latest revision and pay cursor."""
        raw = await self._call(self._storage(), "books", lease_id)
        root, revision, shares, cursor, paid, run, proven = raw
        return StorageBook(
            bytes(root), int(revision), int(shares), int(cursor), int(paid), int(run), int(proven)
        )

    async def arm_seed(self, epoch: int) -> TxReceipt:
        """Fix the block whose hash will be ``epoch``'s challenge seed."""
        return await self._send(self._storage(), "armSeed", [epoch], f"arm seed of epoch {epoch}")

    async def record_seed(self, epoch: int) -> TxReceipt:
        """Record ``epoch``'s seed once its block exists (within 256 blocks of it)."""
        return await self._send(
            self._storage(), "recordSeed", [epoch], f"record seed of epoch {epoch}"
        )

    async def seed(self, epoch: int) -> SeedInfo:
        value, target, recorded = await self._call(self._storage(), "seeds", epoch)
        return SeedInfo(int(value), int(target), int(recorded))

    async def is_sampled(self, lease_id: int, epoch: int) -> bool:
        """Whether ``epoch`` of the lease needs a proof (its seed must be recorded)."""
        return bool(await self._call(self._storage(), "isSampled", lease_id, epoch))

    async def prove(
        self,
        lease_id: int,
        epoch: int,
        proof: StorageProof | None,
        revision: SignedRevision | None = None,
    ) -> TxReceipt:
        """Answer sampled ``epoch`` against the latest revision on chain, or against
        ``revision`` submitted in the same transaction. An empty lease needs no proof.

        ``prove`` takes no ABI arguments: its selector is followed by ``uint64 lease_id ||
        uint32 epoch || proof``, packed (``StorageProof.encode``), since a proof's gas is its
        calldata (``docs/spec/storage-proofs.md`` section 5)."""
        packed = proof.encode() if proof is not None else b""
        if revision is None:
            return await self.prove_packed(lease_id, epoch, packed)
        if revision.revision.lease_id != lease_id:
            raise UsageError("the revision is for another lease")
        return await self._send(
            self._storage(),
            "proveWithRevision",
            [
                lease_id,
                epoch,
                revision.revision.as_args(),
                revision.consumer_sig,
                revision.provider_sig,
                packed,
            ],
            f"prove lease {lease_id} with revision {revision.revision.revision}",
        )

    async def prove_packed(self, lease_id: int, epoch: int, packed: bytes) -> TxReceipt:
        """Send ``prove`` with a proof already packed (``StorageProof.encode``, or b"" for a
        lease with no shares) as it is: the chain judges it."""
        if not 0 <= lease_id < 2**64 or not 0 <= epoch < 2**32:
            raise UsageError("a packed proof names a lease id below 2**64 and an epoch below 2**32")
        head = lease_id.to_bytes(8, "big") + epoch.to_bytes(4, "big")
        return await self.send_packed("prove", head + packed, f"prove lease {lease_id}")

    async def send_packed(self, fn: str, body: bytes, context: str) -> TxReceipt:
        """Send the selector of ``fn`` (``prove`` or ``answerDemand``, which take no ABI
        arguments) followed by ``body``: ``uint64 id || uint32 epoch || proof`` for ``prove``,
        ``uint64 id || proof`` for ``answerDemand``."""
        storage = self._storage()
        data = bytes.fromhex(storage.encode_abi(fn, args=[])[2:]) + body
        tx: TxParams = {"to": storage.address, "data": HexStr("0x" + data.hex())}
        return await self.conn.queue(self.account).send(tx, context=context)

    async def advance(self, lease_id: int, max_epochs: int = 64) -> StorageBook:
        """Decide up to ``max_epochs`` more epochs of a storage lease for pay (anyone may)."""
        if max_epochs < 1:
            raise UsageError("advance at least one epoch")
        await self._send(
            self._storage(), "advance", [lease_id, max_epochs], f"advance lease {lease_id}"
        )
        return await self.storage_book(lease_id)

    async def demand_proof(self, lease_id: int, share_index: int) -> TxReceipt:
        """The consumer demands a proof of one share of the latest revision on chain."""
        return await self._send(
            self._storage(),
            "demand",
            [lease_id, share_index],
            f"demand a proof of share {share_index} on lease {lease_id}",
        )

    async def open_demand(self, lease_id: int) -> DemandInfo | None:
        target, seed, deadline, share, _ = await self._call(self._storage(), "demands", lease_id)
        if int(deadline) == 0:
            return None
        return DemandInfo(int(target), int(seed), int(deadline), int(share))

    async def record_demand_seed(self, lease_id: int) -> TxReceipt:
        return await self._send(
            self._storage(), "recordDemandSeed", [lease_id], f"record demand seed of {lease_id}"
        )

    async def answer_demand(self, lease_id: int, proof: StorageProof | None) -> TxReceipt:
        """Answer the open demand on the lease (``answerDemand()`` then ``uint64 lease_id ||
        proof``, packed as for ``prove``); an empty lease needs no proof."""
        if not 0 <= lease_id < 2**64:
            raise UsageError("a packed proof names a lease id below 2**64")
        packed = proof.encode() if proof is not None else b""
        body = lease_id.to_bytes(8, "big") + packed
        return await self.send_packed("answerDemand", body, f"answer demand on {lease_id}")

    async def report_missed_demand(self, lease_id: int) -> bool:
        """Report a demand that passed its deadline unanswered (a fault); True if the lease
        failed as a result."""
        receipt = await self._send(
            self._storage(),
            "reportMissedDemand",
            [lease_id],
            f"report missed proof on lease {lease_id}",
        )
        storage = self._storage()
        for ev in storage.events.DemandMissed().process_receipt(receipt, errors=DISCARD):
            return bool(ev["args"]["leaseFailed"])
        raise ChainError("report missed proof: no DemandMissed event in the receipt")

    async def is_suspect(self, lease_id: int, revision: int, share_index: int) -> bool:
        key = (revision << 64) | share_index
        return bool(await self._call(self._storage(), "suspect", lease_id, key))

    # ------------------------------------------------------------------ conflicting revisions

    async def report_conflict(
        self, a: Revision, provider_sig_a: bytes, b: Revision, provider_sig_b: bytes
    ) -> ConflictReport:
        """Report two different revisions of one lease with the same number, both signed by
        its provider (owner or operator key): a fault on the penalty ladder, counted once per
        lease and revision. Anyone may report; slashed stake goes to the lease's consumer."""
        if a.lease_id != b.lease_id:
            raise UsageError(
                f"a conflict is two revisions of one lease, not of leases {a.lease_id} and "
                f"{b.lease_id}"
            )
        if a.revision != b.revision:
            raise UsageError(
                f"a conflict is two revisions with the same number, not {a.revision} and "
                f"{b.revision}"
            )
        if a.as_args()[1:] == b.as_args()[1:]:
            raise UsageError(f"the two revisions {a.revision} of lease {a.lease_id} are the same")
        storage = self._storage()
        receipt = await self._send(
            storage,
            "reportConflict",
            [a.lease_id, a.as_args(), provider_sig_a, b.as_args(), provider_sig_b],
            f"report conflicting revisions {a.revision} of lease {a.lease_id}",
        )
        faults = 0
        for ev in self.leases.events.FaultReported().process_receipt(receipt, errors=DISCARD):
            faults = int(ev["args"]["faults"])
        for ev in storage.events.ConflictReported().process_receipt(receipt, errors=DISCARD):
            args = ev["args"]
            return ConflictReport(
                int(args["id"]), int(args["revision"]), str(args["by"]), bool(args["leaseFailed"]),
                faults,
            )  # fmt: skip
        raise ChainError("report conflict: no ConflictReported event in the receipt")

    async def conflict_reported(self, lease_id: int, revision: int) -> bool:
        """Whether a conflict on revision ``revision`` of the lease has been reported."""
        return bool(await self._call(self._storage(), "conflictReported", lease_id, revision))

    async def storage_events(
        self, from_block: int = 0, to_block: int | None = None, lease_id: int | None = None
    ) -> list[ChainEvent]:
        """The storage module's events (revisions submitted, seeds, proofs, advances, demands,
        conflicts) in a block range, in chain order; only ``lease_id``'s when given (events
        that name a lease carry it as ``id``)."""
        storage = self._storage()
        last = to_block if to_block is not None else await self.conn.block_number()
        logs = await self.conn.w3.eth.get_logs(
            {"address": storage.address, "fromBlock": from_block, "toBlock": last}
        )
        by_topic = event_topics(storage)
        out: list[ChainEvent] = []
        for log in logs:
            name = by_topic.get(bytes(log["topics"][0])) if log["topics"] else None
            if name is None:
                continue
            args = dict(storage.events[name]().process_log(log)["args"])
            if lease_id is not None and args.get("id") != lease_id:
                continue
            out.append(ChainEvent(name, args, int(log["blockNumber"]), int(log["logIndex"])))
        out.sort(key=lambda e: (e.block, e.log_index))
        return out

    # ------------------------------------------------------------------ time-stamps

    def _anchors(self) -> AsyncContract:
        return self.conn.contract("TimestampAnchor", self.deployment.address("TimestampAnchor"))

    async def anchor(self, root: bytes) -> TxReceipt:
        """Time-stamp a Merkle root (of manifest hashes) on chain."""
        if len(root) != 32 or root == bytes(32):
            raise UsageError("an anchored root is 32 non-zero bytes")
        return await self._send(self._anchors(), "anchor", [root], "anchor time-stamp root")

    async def anchored_at(self, root: bytes) -> tuple[int, int] | None:
        """(block time, block number) of the first anchoring of ``root``; None if never."""
        if len(root) != 32:
            raise UsageError("an anchored root is 32 bytes")
        time, number = await self._call(self._anchors(), "anchoredAt", root)
        return None if int(time) == 0 else (int(time), int(number))
