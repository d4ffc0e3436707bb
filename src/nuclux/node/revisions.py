"""Co-signing storage revisions: the node's side of ``storage-protocol.md`` section 3.

Theory of operation
-------------------
A revision is EIP-712 typed data of the storage settlement module
(``nuclux.chain.revision``). The consumer signs it first and sends it with the share list; the
node, under one lock per lease (so concurrent requests for the same lease run one after the
other):

1. plans it from its index (``ShardStore.plan_revision``): the revision number must be its
   latest + 1 (``RevisionConflict``), every listed share well formed (``MalformedShare``);
   entries, used bytes (the bytes of the listed shares) and the lease root follow;
2. compares used bytes and root with the request (``RevisionMismatch``, nothing changes);
3. checks the consumer's signature over the typed data (``Unauthenticated``), then signs with
   its operator key (both off the event loop);
4. commits: the removed shares' blocks are deleted and the revision with its share list is
   stored in one durable transaction, and only then is the signature returned.

``RevisionSigner`` holds the operator key and the signing domain (chain id, module address).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from eth_account.signers.local import LocalAccount

from nuclux.chain import Ledger
from nuclux.chain.eip712 import recover_typed
from nuclux.chain.revision import Revision, sign_revision, typed_data
from nuclux.core.types import ResourceClass
from nuclux.errors import Unauthenticated
from nuclux.node.shares import RevisionMismatch, RevisionRequest
from nuclux.node.store import ShardStore

_SECP256K1_HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0


@dataclass(frozen=True)
class RevisionSigner:
    """Signs revisions with the provider's operator key and checks the consumer's."""

    account: LocalAccount
    chain_id: int
    module: str  # the StorageSettlement address (EIP-712 verifying contract)

    @classmethod
    def for_ledger(cls, ledger: Ledger) -> RevisionSigner:
        """The signer of a ledger whose account is the operator key."""
        return cls(ledger.account, ledger.conn.chain_id, ledger.module_of(ResourceClass.STORAGE))

    @property
    def address(self) -> str:
        return str(self.account.address)

    def sign(self, rev: Revision) -> bytes:
        return sign_revision(self.account, rev, self.chain_id, self.module)

    def signer_of(self, rev: Revision, signature: bytes) -> str:
        """The address that signed ``rev``; ``Unauthenticated`` for a signature the contract
        would refuse (wrong length, ``v`` not 27/28, ``s`` in the upper half)."""
        if len(signature) != 65 or signature[64] not in (27, 28):
            raise Unauthenticated("a revision signature is 65 bytes r || s || v, v = 27 or 28")
        if int.from_bytes(signature[32:64], "big") > _SECP256K1_HALF_N:
            raise Unauthenticated("a revision signature must have s in the lower half")
        signer = recover_typed(typed_data(rev, self.chain_id, self.module), signature)
        if signer is None:
            raise Unauthenticated("the revision signature does not recover to any key")
        return signer


@dataclass
class RevisionDesk:
    """Co-signs revisions for one node (see the module docstring)."""

    store: ShardStore
    signer: RevisionSigner
    clock: Callable[[], int]
    _locks: dict[int, asyncio.Lock] = field(default_factory=dict)
    _users: dict[int, int] = field(default_factory=dict)

    @asynccontextmanager
    async def _lease_lock(self, lease_id: int) -> AsyncIterator[None]:
        lock = self._locks.setdefault(lease_id, asyncio.Lock())
        self._users[lease_id] = self._users.get(lease_id, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._users[lease_id] -= 1
            if not self._users[lease_id]:  # nobody holds or waits: forget the lock
                del self._users[lease_id], self._locks[lease_id]

    async def co_sign(self, lease_id: int, consumer: str, req: RevisionRequest) -> bytes:
        """The node's signature over the requested revision, stored durably first."""
        async with self._lease_lock(lease_id):
            plan = await self.store.plan_revision(lease_id, req)
            if (plan.used_bytes, plan.root) != (req.used_bytes, req.root):
                raise RevisionMismatch(
                    f"revision {req.revision} of lease {lease_id}: the node computes "
                    f"used_bytes {plan.used_bytes} and root {plan.root.hex()} for the "
                    f"{plan.share_count} listed shares, the request says {req.used_bytes} "
                    f"and {req.root.hex()}",
                    plan,
                )
            rev = Revision(lease_id, req.revision, plan.used_bytes, plan.share_count, plan.root)

            def check_and_sign() -> bytes:
                who = self.signer.signer_of(rev, req.signature)
                if who.lower() != consumer.lower():
                    raise Unauthenticated(
                        f"the revision is signed by {who}, not by lease {lease_id}'s consumer "
                        f"{consumer}"
                    )
                return self.signer.sign(rev)

            signature = await asyncio.to_thread(check_and_sign)
            await self.store.commit_revision(lease_id, req, plan, signature, self.clock())
            return signature
