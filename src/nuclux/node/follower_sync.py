"""One sync step of a ``ChainView``: reorg check, log range, state reads, one commit.

Theory of operation. Events mark what changed; state is read, not re-derived.

0. Head. With no confirmations to wait for (lag 0) a step reads the latest block's header:
   when that is the cursor's own block (same number and hash) nothing is new and nothing was
   reorganised, and the step ends after that one call, as an idle node's steps do. A header
   of the same number with another hash is a reorg at the head, found by step 1.
1. Reorg check. The hash stored for the cursor block must still be the chain's hash at that
   number. If not, the stored recent hashes are searched for the newest block the chain still
   has (canonical blocks form a prefix, so a binary search): the fork point. The step then
   starts from the fork point, and every key touched after it is dirty: re-read with this
   step's keys. If no stored block is canonical the fork is deeper than the window: the view
   is wiped and rebuilt from the start block.
2. Range: cursor+1 .. last = min(head - lag, cursor + max_range), lag = confirmations - 1.
3. Collect. The ProviderRegistry and LeaseManager logs of the range name the touched keys:
   leases (an ``id`` argument) and provider owners (a ``provider`` argument). Each touched or
   dirty key is read at ``last`` (an eth_call at that block), and so is the provider of a lease
   whose event moved the provider's release time (accept, extension, closing), a change the
   registry does not announce itself. A key that no longer exists there is deleted.
4. Commit. If block ``last`` still has the same hash after the reads, the rewind (if any),
   records, touches, block hashes and cursor are written in one SQLite transaction
   (``ViewStore.apply``). A step that fails writes nothing; the next one starts over.

A node that prunes old state (anvil keeps 64 blocks, geth 128) cannot answer reads at an old
batch end while catching up; the step then extends to head - lag (logs fetched in chunks of
``max_range``) and reads there, so the view is still a consistent snapshot.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from nuclux.chain.ledger import BlockHeader, Ledger, LoggedEvent
from nuclux.errors import ChainError
from nuclux.node.follower_store import LEASE, PROVIDER, Batch, ViewStore

log = logging.getLogger("nuclux.node.follower")

RELEASE_EVENTS = frozenset({"LeaseAccepted", "ExtensionAccepted", "LeaseClosing"})
READ_CONCURRENCY = 16
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class ReorgReport:
    """The cursor was on a block the chain dropped; ``fork_block`` None means a full resync."""

    old_block: int
    fork_block: int | None
    marked_dirty: int

    @property
    def resynced(self) -> bool:
        return self.fork_block is None


@dataclass(frozen=True, slots=True)
class SyncReport:
    """One step: logs of blocks ``first``..``last`` (``first`` None: no new blocks read)."""

    head: int
    first: int | None
    last: int
    events: int
    leases_read: int
    providers_read: int
    caught_up: bool
    reorg: ReorgReport | None = None
    extended: bool = False


class StateUnavailable(ChainError):
    """The node could not serve state at the batch end (pruned, most likely)."""


@dataclass
class Follower:
    """The sync algorithm over a ``ViewStore``; ``cursor`` mirrors the stored one."""

    ledger: Ledger
    store: ViewStore
    lag: int
    max_range: int
    window: int
    start_block: int
    cursor: BlockHeader | None = field(init=False)

    def __post_init__(self) -> None:
        self.cursor = self.store.cursor()

    @property
    def synced_block(self) -> int:
        return self.cursor.number if self.cursor else self.start_block - 1

    async def step(self) -> SyncReport:
        cursor = self.cursor
        if cursor is not None and self.lag == 0:
            # the head's header, not just its number: when it is the cursor's own block there
            # is nothing new and no reorg, known from one call (an idle node's every step), or
            # from none when the endpoint pushes its heads (nuclux.chain.heads)
            if self.ledger.conn.pushed_head() == (cursor.number, cursor.hash):
                return SyncReport(cursor.number, None, cursor.number, 0, 0, 0, True, None)
            latest = await self.ledger.block_header("latest")
            if latest is None:
                raise ChainError("the chain reports no latest block")
            if (heads := self.ledger.conn.heads) is not None:
                heads.learn(latest.number, latest.hash)  # the next idle step asks nothing
            if latest.number == cursor.number and latest.hash == cursor.hash:
                return SyncReport(latest.number, None, cursor.number, 0, 0, 0, True, None)
            head = latest.number
        else:
            head = await self.ledger.conn.block_number()
        fork, reorg = await self._check_reorg()
        done = self.synced_block if fork is None else fork.number
        dirty_leases, dirty_owners = set[int](), set[str]()
        if fork is not None and self.cursor is not None:
            dirty_leases, dirty_owners = self.store.touched_after(fork.number)
            reorg = ReorgReport(self.cursor.number, fork.number, len(dirty_leases | dirty_owners))
            log.warning(
                "chain view: reorg; block %d is gone, fork at block %d, %d records to re-read",
                *(reorg.old_block, fork.number, reorg.marked_dirty),
            )
        target = head - self.lag
        last = min(target, done + self.max_range)
        if last <= done:
            if fork is None:
                return SyncReport(head, None, done, 0, 0, 0, True, reorg)
            last = done  # nothing new: re-read what the dropped blocks touched, at the fork
        extended = False
        try:
            batch, events = await self._collect(done + 1, last, dirty_leases, dirty_owners)
        except StateUnavailable as exc:
            if last >= target:
                raise
            log.info("chain view: %s; extending this step to block %d", exc, target)
            batch, events = await self._collect(done + 1, target, dirty_leases, dirty_owners)
            last, extended = target, True
        self.store.apply(batch, self.window, None if fork is None else fork.number)
        self.cursor = batch.last
        first = done + 1 if done < last else None
        return SyncReport(
            *(head, first, last, events, len(batch.leases), len(batch.providers)),
            caught_up=last >= target,
            reorg=reorg,
            extended=extended,
        )

    async def _check_reorg(self) -> tuple[BlockHeader | None, ReorgReport | None]:
        """(fork point, None) after a reorg the window covers; (None, report) after a deeper
        one, the view already wiped; (None, None) while the cursor is canonical."""
        cursor = self.cursor
        if cursor is None:
            return None, None
        now = await self.ledger.block_header(cursor.number)
        if now is not None and now.hash == cursor.hash:
            return None, None
        fork = await self._fork_point()
        if fork is not None:
            return fork, None
        log.warning(
            "chain view: block %d was reorganised away and no block of the %d-block window "
            "survives; resyncing from block %d",
            *(cursor.number, self.window, self.start_block),
        )
        self.store.reset()
        self.cursor = None
        return None, ReorgReport(cursor.number, None, 0)

    async def _fork_point(self) -> BlockHeader | None:
        """The newest stored block the chain still has (canonical blocks form a prefix)."""
        blocks = self.store.recent_blocks()
        lo, hi, best = 0, len(blocks) - 1, None
        while lo <= hi:
            mid = (lo + hi) // 2
            number, stored = blocks[mid]
            header = await self.ledger.block_header(number)
            if header is not None and header.hash == stored:
                best, lo = header, mid + 1
            else:
                hi = mid - 1
        return best

    async def _collect(
        self, first: int, last: int, leases: set[int], owners: set[str]
    ) -> tuple[Batch, int]:
        header = await self.ledger.block_header(last)
        if header is None:
            raise ChainError(f"block {last} disappeared while syncing (a reorg); will retry")
        events = await self._events(first, last)
        lease_ids, owner_set = set(leases), set(owners)
        touches = {(last, LEASE, str(i)) for i in leases} | {(last, PROVIDER, o) for o in owners}
        hashes, release = {last: header.hash}, set()
        for ev in events:
            hashes[ev.block] = ev.block_hash
            if ev.contract == "LeaseManager" and "id" in ev.args:
                lease_id = int(ev.args["id"])
                lease_ids.add(lease_id)
                touches.add((ev.block, LEASE, str(lease_id)))
                if ev.name in RELEASE_EVENTS:
                    release.add(lease_id)
            if "provider" in ev.args:
                owner_set.add(str(ev.args["provider"]))
                touches.add((ev.block, PROVIDER, str(ev.args["provider"])))
        lease_state = await self._read(self.ledger.lease_at, lease_ids, last)
        for lease in (lease_state[i] for i in release):
            if lease is not None and lease.provider not in owner_set:
                owner_set.add(lease.provider)
                touches.add((last, PROVIDER, lease.provider))
        provider_state = await self._read(self.ledger.provider_at, owner_set, last)
        again = await self.ledger.block_header(last)
        if again is None or again.hash != header.hash:
            raise ChainError(f"block {last} changed while syncing (a reorg); will retry")
        return Batch(header, lease_state, provider_state, touches, hashes), len(events)

    async def _events(self, first: int, last: int) -> list[LoggedEvent]:
        out: list[LoggedEvent] = []
        for start in range(first, last + 1, self.max_range):
            out += await self.ledger.registry_events(start, min(last, start + self.max_range - 1))
        return out

    async def _read(
        self, fetch: Callable[[K, int], Awaitable[V]], keys: Iterable[K], block: int
    ) -> dict[K, V]:
        """``fetch(key, block)`` for every key, a few at a time."""
        results: dict[K, V] = {}
        failures: list[Exception] = []
        gate = asyncio.Semaphore(READ_CONCURRENCY)

        async def one(key: K) -> None:
            async with gate:
                try:
                    results[key] = await fetch(key, block)
                except Exception as exc:
                    failures.append(exc)

        async with asyncio.TaskGroup() as tg:
            for key in keys:
                tg.create_task(one(key))
        if failures and isinstance(failures[0], ChainError):
            msg = f"cannot read state at block {block}: {failures[0]}"
            raise StateUnavailable(msg) from failures[0]
        if failures:
            raise failures[0]
        return results
