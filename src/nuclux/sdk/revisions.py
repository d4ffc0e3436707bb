"""Co-signed revisions of our storage leases (``storage-protocol.md`` §3), one per provider per
change, never one per block.

Theory of operation
-------------------
For each lease the client keeps the share list of the latest co-signed revision, in its own
order, with each share's root, leaf count and size: the lease root is MTH over
``entry_hash(share_root, leaf_count)`` in that order, the used bytes the sum of the sizes. A
change (shares added after an upload, shares removed by ``rm``) becomes revision r+1: the new
list, its used bytes and root, signed by us (EIP-712, ``nuclux.chain.revision``), sent to the
provider, which checks everything and counter-signs.

Changes to one lease are serialised. A change the provider does not co-sign (it is down, or
refuses) stays pending and rides along with the next revision of that lease, so no share is
forgotten; the data itself is stored either way.

A client that knows nothing of a lease (a second device, a restart, a conflict) starts from
the provider's latest revision, which must carry our own signature over exactly the root its
listed shares reproduce: a provider cannot slip a share of its choosing into our next one.

The client keeps the provider's signature over the last revision it co-signed. Should the
provider later present another revision with that number (it lost its state and signed the
number again, or it lies), both signatures go on chain at once (``Ledger.report_conflict``):
a provable fault on the provider's penalty ladder. A refused report is logged, never fatal.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from nuclux.chain import Ledger
from nuclux.chain.eip712 import recover_typed
from nuclux.chain.revision import Revision, sign_revision, typed_data
from nuclux.core.merkle import lease_root
from nuclux.core.types import ResourceClass
from nuclux.errors import IntegrityError, NucluxError
from nuclux.net.client import CoSignedRevision, NodeClient, RevisionConflict, RevisionMismatch
from nuclux.sdk.peers import PEER_ERRORS

log = logging.getLogger("nuclux.sdk")

ShareKey = tuple[bytes, int]  # (file id, share index)
Entry = tuple[bytes, int, int]  # (share root, leaf count, size in bytes)


@dataclass(slots=True)
class _LeaseState:
    revision: int = 0
    shares: dict[ShareKey, Entry] = field(default_factory=dict)  # in the revision's order
    add: dict[ShareKey, Entry] = field(default_factory=dict)  # not yet co-signed
    remove: set[ShareKey] = field(default_factory=set)
    known: bool = False  # read from the provider (or built by us) at least once
    signed: tuple[Revision, bytes] | None = None  # the last revision we saw co-signed, its
    # provider signature (evidence should the provider sign another with that number)


@dataclass(frozen=True, slots=True)
class Committed:
    lease_id: int
    revision: int | None  # None: not co-signed (``error`` says why); the change is pending
    error: str | None = None


class RevisionBook:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._state: dict[int, _LeaseState] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    def _module(self) -> str:
        return self.ledger.module_of(ResourceClass.STORAGE)

    async def commit(
        self,
        client: NodeClient,
        lease_id: int,
        *,
        add: list[tuple[bytes, int, Entry]] | None = None,
        remove: list[ShareKey] | None = None,
    ) -> Committed:
        """Revision r+1 of ``lease_id`` with shares ``add`` (file id, index, (root, leaf
        count, size)) appended and ``remove`` dropped (with whatever was pending)."""
        state = self._state.setdefault(lease_id, _LeaseState())
        for fid, i, entry in add or []:
            state.add[(fid, i)] = entry
            state.remove.discard((fid, i))
        for key in remove or []:
            state.add.pop(key, None)
            state.remove.add(key)
        async with self._locks.setdefault(lease_id, asyncio.Lock()):
            if not state.add and not state.remove:
                return Committed(lease_id, state.revision or None)
            try:
                return await self._commit(client, lease_id, state)
            except PEER_ERRORS as err:
                reason = str(err) or type(err).__name__
                # the caller reports it (``Committed.error``): a warning here would say it twice
                log.info("lease %d: revision not co-signed (kept pending): %s", lease_id, reason)
                return Committed(lease_id, None, reason)

    async def _commit(self, client: NodeClient, lease_id: int, state: _LeaseState) -> Committed:
        if not state.known:
            await self._adopt(lease_id, state, await client.latest_revision(lease_id))
        for attempt in range(3):
            # what this revision carries: calls made while it is being co-signed add to
            # ``state`` and go in the next one (they wait for the lock)
            adding, dropping = dict(state.add), set(state.remove)
            shares = {k: v for k, v in state.shares.items() if k not in dropping}
            shares.update(adding)
            removed = [k for k in dropping if k in state.shares]
            root = lease_root([(r, leaves) for r, leaves, _ in shares.values()])
            used = sum(size for _, _, size in shares.values())
            rev = Revision(lease_id, state.revision + 1, used, len(shares), root)
            mine = sign_revision(
                self.ledger.account, rev, self.ledger.conn.chain_id, self._module()
            )
            try:
                theirs = await client.revise(
                    lease_id,
                    revision=rev.revision,
                    shares=list(shares),
                    remove=removed,
                    used_bytes=used,
                    root=root,
                    signature=mine,
                )
            except RevisionMismatch:
                if attempt == 2:
                    raise
                await self._adopt(lease_id, state, await client.latest_revision(lease_id))
                continue
            except RevisionConflict as err:
                if attempt == 2:
                    raise
                await self._adopt(lease_id, state, err.latest)  # another device, or lost state
                continue
            state.revision, state.shares, state.signed = rev.revision, shares, (rev, theirs)
            for k, v in adding.items():
                if state.add.get(k) == v:
                    del state.add[k]
            state.remove -= dropping
            return Committed(lease_id, rev.revision)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _adopt(
        self, lease_id: int, state: _LeaseState, latest: CoSignedRevision | None
    ) -> None:
        """Report a conflict with the revision we hold, if any, then resume from ``latest``."""
        held = state.signed
        if latest is not None and held is not None and held[0].revision == latest.revision:
            rev = Revision(
                lease_id, latest.revision, latest.used_bytes, latest.share_count, latest.root
            )
            if rev != held[0]:
                try:
                    await self.ledger.report_conflict(
                        held[0], held[1], rev, latest.provider_signature
                    )
                    log.warning(
                        "lease %d: the provider signed two different revisions %d; reported "
                        "on chain as a fault",
                        lease_id,
                        rev.revision,
                    )
                except NucluxError as err:
                    log.warning("lease %d: conflicting revision not reported: %s", lease_id, err)
        self._resume(lease_id, state, latest)

    def _resume(self, lease_id: int, state: _LeaseState, latest: CoSignedRevision | None) -> None:
        """Adopt the provider's latest revision after checking it is one we signed."""
        state.known = True
        if latest is None:
            state.revision, state.shares, state.signed = 0, {}, None
            return
        if len(latest.entries) != len(latest.shares):
            raise IntegrityError("the provider's latest revision lists no share roots")
        entries: dict[ShareKey, Entry] = dict(zip(latest.shares, latest.entries, strict=True))
        root = lease_root([(r, leaves) for r, leaves, _ in entries.values()])
        rev = Revision(lease_id, latest.revision, latest.used_bytes, len(entries), root)
        data = typed_data(rev, self.ledger.conn.chain_id, self._module())
        signer = recover_typed(data, latest.consumer_signature) or ""
        if root != latest.root or signer.lower() != self.ledger.address.lower():
            raise IntegrityError(
                f"the provider's revision {latest.revision} is not one this account signed over"
                " the shares it lists: refusing to build on it"
            )
        state.revision, state.shares = latest.revision, entries
        state.signed = (rev, latest.provider_signature)
