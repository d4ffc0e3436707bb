"""What every storage operation of one account shares, and finding a file's manifest.

``StorageContext`` bundles the account (its ledger and keys), the provider directory, the
lease book, the file index, the revision book, one worker thread for CPU-bound work (sealing,
coding, hashing: off the event loop) and the manifest digests waiting to be time-stamped.

``fetch_manifest`` reads every copy of a manifest it is told about at once and keeps the
newest valid one: each copy must carry the owner's signature and name the file asked for; a
copy older than a version already seen (from the index, or a grant) is a rollback and refused.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from nuclux.chain import Ledger
from nuclux.core.file_index import IndexEntry
from nuclux.core.manifest import Manifest, decode_manifest, require_version
from nuclux.core.reference import Reference
from nuclux.errors import Forbidden, IntegrityError, NucluxError, ObjectNotFound, UsageError
from nuclux.keys.derive import AccountKeys
from nuclux.sdk.batcher import Batcher
from nuclux.sdk.behind import WriteBehind
from nuclux.sdk.index import IndexStore, IndexUnavailable
from nuclux.sdk.leases import LeaseBook
from nuclux.sdk.leftover_record import LeftoverRecord
from nuclux.sdk.nodeapi import manifest_id
from nuclux.sdk.peers import Peers, gather_answers
from nuclux.sdk.revisions import RevisionBook
from nuclux.sdk.settings import StorageSettings


@dataclass(frozen=True, slots=True)
class Pending:
    """A manifest written and not yet time-stamped, and the leases holding it."""

    reference: Reference
    version: int
    digest: bytes
    leases: tuple[int, ...]


class ManifestUnavailable(NucluxError):
    """No copy of a manifest could be read (its providers did not answer)."""


@dataclass(frozen=True, slots=True)
class Location:
    """Where a copy of a manifest may be: a lease, and the capability a grantee presents."""

    lease_id: int
    capability: str | None = None


@dataclass
class StorageContext:
    ledger: Ledger
    keys: AccountKeys
    settings: StorageSettings
    peers: Peers
    leases: LeaseBook
    index: IndexStore
    revisions: RevisionBook
    executor: ThreadPoolExecutor
    digests: list[Pending] = field(default_factory=list)  # manifests not yet time-stamped
    warnings: list[str] = field(default_factory=list)  # what went wrong but did not fail
    behind: WriteBehind = field(default_factory=lambda: WriteBehind(32))
    batcher: Batcher = field(default_factory=lambda: Batcher(30.0))
    leftovers: LeftoverRecord = field(default_factory=lambda: LeftoverRecord(None))
    swept: dict[bytes, int] = field(default_factory=dict)  # leftovers removed, per file id

    @classmethod
    def create(cls, ledger: Ledger, keys: AccountKeys, settings: StorageSettings) -> StorageContext:
        if keys.address.lower() != ledger.address.lower():
            raise UsageError(
                f"the keys are for {keys.address} but the ledger signs as {ledger.address}"
            )
        peers = Peers(
            ledger,
            keys.eth_private_key,
            timeout=settings.request_timeout,
            block_streams=settings.block_streams,
        )
        leases = LeaseBook(ledger, peers, settings)
        index = IndexStore(keys.address, keys.x25519_private, leases, peers, settings)
        executor = ThreadPoolExecutor(1, thread_name_prefix="nuclux-sdk")
        return cls(
            ledger,
            keys,
            settings,
            peers,
            leases,
            index,
            RevisionBook(ledger),
            executor,
            behind=WriteBehind(settings.writes_in_flight),
            batcher=Batcher(settings.request_timeout),
            leftovers=LeftoverRecord(settings.leftovers_record),
        )

    @property
    def address(self) -> str:
        return self.keys.address

    async def close(self) -> None:
        await self.behind.cancel()  # unflushed: not durable, like the index
        await self.batcher.close()
        await self.peers.close()
        self.executor.shutdown(wait=True)

    def own(self, reference: Reference) -> None:
        """``Forbidden`` unless this account owns the file."""
        if reference.owner.lower() != self.address.lower():
            raise Forbidden(
                f"{reference} belongs to {reference.owner}, not to {self.address}: ask its owner"
                f" to `nuclux share` it with {self.address}"
            )

    async def entry(self, reference: Reference) -> IndexEntry | None:
        return (await self.index.current()).get(reference.file_id)

    async def owner_manifest(
        self, reference: Reference, *, narrow: bool = False
    ) -> tuple[Manifest, list[int]]:
        """Our own file's newest manifest, asked of every live lease of the account at once,
        the index's locators first: a lease without a copy answers 404 at once, and a hung
        provider holding one costs no more than the grace after the first good copy. The
        index, when it can be read, gives the lowest version to accept. ``narrow`` (a listing
        of many files): ask only the index's locators, and every lease only if none of them
        serves a copy."""
        await self.behind.wait_for(reference.file_id)  # stored by this client a moment ago?
        try:
            entry = await self.entry(reference)
        except IndexUnavailable:
            entry = None
        floor = 1 if entry is None else entry.manifest_version
        ids: list[int] = list(entry.locators) if entry is not None else []
        if narrow and ids:
            with contextlib.suppress(ObjectNotFound, ManifestUnavailable, IntegrityError):
                return await self.fetch_manifest(reference, [Location(i) for i in ids], floor)
        ids += [x.id for x in await self.leases.mine() if x.id not in ids]
        return await self.fetch_manifest(reference, [Location(i) for i in ids], floor)

    async def fetch_manifest(
        self, reference: Reference, locations: list[Location], floor: int
    ) -> tuple[Manifest, list[int]]:
        """The newest valid manifest among the copies, and the leases holding that version."""
        if not locations:
            raise ObjectNotFound(f"{reference}: this account holds no lease where it could be")
        outcomes = await gather_answers(
            [self._manifest_copy(reference, loc) for loc in locations],
            timeout=self.settings.request_timeout,
            grace=self.settings.manifest_grace,
        )
        found: list[tuple[int, Manifest]] = []
        problems: list[str] = []
        for loc, got in zip(locations, outcomes, strict=True):
            if isinstance(got, Manifest):
                found.append((loc.lease_id, got))
            elif isinstance(got, BaseException) and not isinstance(got, ObjectNotFound):
                problems.append(f"lease {loc.lease_id}: {got or type(got).__name__}")
        if not found:
            if problems:
                raise ManifestUnavailable(
                    f"{reference}: no copy of its manifest could be read ({'; '.join(problems)})"
                )
            raise ObjectNotFound(
                f"{reference}: no provider holds its manifest (removed, or never stored)"
            )
        best = max(m.version for _, m in found)
        manifest = next(m for _, m in found if m.version == best)
        require_version(manifest, floor)
        return manifest, [lid for lid, m in found if m.version == best]

    async def _manifest_copy(self, reference: Reference, loc: Location) -> Manifest | None:
        _, client = await self.peers.client_for_lease(loc.lease_id)
        data = await client.get(
            loc.lease_id, manifest_id(reference.file_id), capability=loc.capability
        )
        m = decode_manifest(data)
        if m.reference != reference:
            raise IntegrityError(
                f"lease {loc.lease_id} served the manifest of {m.reference}, not of {reference}"
            )
        return m

    async def chain_now(self) -> int:
        return await self.ledger.conn.now()
