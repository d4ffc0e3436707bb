"""A node's local, persistent view of the on-chain registry and leases: ``ChainView``.

Theory of operation. A node answers "is this lease active, who is this operator's provider,
which certificate does that provider pin" on every request, so the answers are local: SQLite
queries on a view the node keeps in step with the chain (``follower_store`` has the schema).
Events mark what changed; state is read, not re-derived: each ``sync()`` reads the
ProviderRegistry and LeaseManager logs of the next block range, reads the current state of
every lease and provider they touch at the range's last block and commits it all with the
cursor in one transaction (``follower_sync`` has the step and the reorg handling). The view
lags the head by ``confirmations - 1`` blocks. It survives restarts: opening the same file
continues from its cursor. After a reorg it rewinds to the fork point and re-reads what the
dropped blocks touched; a reorg deeper than its ``window`` of recent blocks rebuilds it.

``run`` loops ``sync`` every ``poll_interval`` (at once while behind), logging RPC failures
and retrying with exponential backoff, never crashing. ``wait_for_block`` lets a request that
names a just-mined lease wait, bounded, until the view has reached its block.

Records are the chain layer's own frozen values: ``LeaseRecord`` is ``nuclux.core.lease.Lease``
and ``ProviderRecord`` is ``ProviderInfo``, so a view record compares equal to a fresh read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterable
from pathlib import Path
from typing import TypeAlias

from eth_utils.address import to_checksum_address

from nuclux.aio import first_of
from nuclux.chain.ledger import Ledger, ProviderInfo
from nuclux.core.lease import Lease, LeaseState
from nuclux.errors import ChainError, UsageError
from nuclux.node.follower_store import ViewStore
from nuclux.node.follower_sync import Follower, ReorgReport, SyncReport

__all__ = ["ChainView", "LeaseRecord", "ProviderRecord", "ReorgReport", "SyncReport"]

log = logging.getLogger(__name__)
LeaseRecord: TypeAlias = Lease
ProviderRecord: TypeAlias = ProviderInfo


class ChainView:
    """The registry and leases as of ``synced_block``, kept in SQLite at ``path``."""

    def __init__(
        self,
        ledger: Ledger,
        path: str | Path = ":memory:",
        *,
        confirmations: int = 1,
        max_range: int = 2000,
        window: int = 128,
        start_block: int | None = None,
    ) -> None:
        if confirmations < 1 or max_range < 1 or window < 1:
            raise UsageError("confirmations, max_range and window must be at least 1")
        dep = ledger.deployment
        self.ledger = ledger
        self.epoch_length = dep.params.epoch_length
        start = dep.block if start_block is None else start_block
        identity = {
            "chain_id": str(dep.chain_id),
            "registry": dep.address("ProviderRegistry"),
            "lease_manager": dep.address("LeaseManager"),
            "start_block": str(start),
        }
        self._store = ViewStore(path, identity)
        self._follower = Follower(ledger, self._store, confirmations - 1, max_range, window, start)
        self._lock = asyncio.Lock()
        self._progress = asyncio.Event()
        self._wake = asyncio.Event()
        self._running = 0

    def close(self) -> None:
        self._store.close()

    def __enter__(self) -> ChainView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ local reads

    @property
    def synced_block(self) -> int:
        """The last block processed (the start block - 1 before the first sync)."""
        return self._follower.synced_block

    @property
    def chain_time(self) -> int:
        """The timestamp of ``synced_block`` (0 before the first sync)."""
        cursor = self._follower.cursor
        return cursor.timestamp if cursor else 0

    @property
    def epoch(self) -> int:
        return self.chain_time // self.epoch_length

    def lease(self, lease_id: int) -> LeaseRecord | None:
        return self._store.lease(lease_id) if 0 < lease_id < 2**63 else None

    def leases_of_provider(
        self, owner: str, states: Iterable[LeaseState] | None = None
    ) -> list[LeaseRecord]:
        return self._store.leases("provider", _checksum(owner), states)

    def leases_of_consumer(
        self, consumer: str, states: Iterable[LeaseState] | None = None
    ) -> list[LeaseRecord]:
        return self._store.leases("consumer", _checksum(consumer), states)

    def provider(self, owner: str) -> ProviderRecord | None:
        return self._store.provider("owner", _checksum(owner))

    def provider_for_operator(self, operator: str) -> ProviderRecord | None:
        return self._store.provider("operator", _checksum(operator))

    def fingerprint_of(self, owner: str) -> bytes | None:
        p = self.provider(owner)
        return None if p is None else p.cert_fingerprint

    # ------------------------------------------------------------------ following the chain

    async def sync(self) -> SyncReport:
        """One step: handle a reorg, then process at most ``max_range`` new blocks."""
        async with self._lock:
            report = await self._follower.step()
        if report.first is not None or report.leases_read or report.providers_read:
            self._progress.set()
            self._progress = asyncio.Event()
        return report

    async def catch_up(self) -> list[SyncReport]:
        """Sync until the view is at head - lag; the reports of every step."""
        reports = [await self.sync()]
        while not reports[-1].caught_up:
            reports.append(await self.sync())
        return reports

    async def run(
        self, stop: asyncio.Event, poll_interval: float = 1.0, *, max_backoff: float = 30.0
    ) -> None:
        """Sync until ``stop`` is set; RPC failures are logged and retried with backoff."""
        if poll_interval <= 0:
            raise UsageError("poll_interval must be positive")
        self._running += 1
        failures = 0
        try:
            while not stop.is_set():
                try:
                    report = await self.sync()
                except Exception as exc:
                    failures += 1
                    delay = min(max_backoff, poll_interval * 2 ** min(failures - 1, 16))
                    expected = isinstance(exc, ChainError | OSError | TimeoutError)
                    log.warning(
                        "chain view: sync failed (%s: %s); retry %d in %.2f s",
                        *(type(exc).__name__, exc, failures, delay),
                        exc_info=not expected,
                    )
                    await self._pause(stop, delay, wakeable=False)
                    continue
                failures = 0
                if report.caught_up:
                    await self._pause(stop, poll_interval, wakeable=True, beyond=report.head)
        finally:
            self._running -= 1

    async def wait_for_block(self, number: int, timeout: float) -> bool:
        """Whether the view reaches block ``number`` within ``timeout`` seconds.

        With ``run`` active this wakes the loop and waits for its progress; without, it syncs.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        heads = self.ledger.conn.heads
        if heads is not None and heads.number is not None and heads.number < number:
            # a block the caller knows of (a receipt's) before its push arrived: read the head
            # so the view's next step does not take the pushed one for the chain's
            await self.ledger.conn.block_number(fresh=True)
        while self.synced_block < number:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            if self._running:
                progress = self._progress
                self._wake.set()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(remaining):
                        await progress.wait()
            elif (await self.sync()).caught_up and self.synced_block < number:
                await asyncio.sleep(min(0.05, max(0.0, deadline - loop.time())))
        return True

    @property
    def progress(self) -> asyncio.Event:
        """Set at the view's next step that reads new blocks (wait on it to act on them)."""
        return self._progress

    async def _pause(
        self, stop: asyncio.Event, delay: float, *, wakeable: bool, beyond: int | None = None
    ) -> None:
        """Sleep ``delay`` seconds, or until ``stop`` (or ``wake``, when ``wakeable``). With
        the chain's heads pushed (``nuclux.chain.heads``) and ``beyond`` given, a head past
        it ends the pause too: the view reads a new block as it arrives."""
        waits: list[Awaitable[object]] = [stop.wait()]
        if wakeable:
            waits.append(self._wake.wait())
        heads = self.ledger.conn.heads
        if wakeable and beyond is not None and heads is not None and heads.live:
            waits.append(heads.wait_beyond(beyond, delay))
        await first_of(waits, delay)
        self._wake.clear()


def _checksum(address: str) -> str:
    try:
        return str(to_checksum_address(address))
    except (ValueError, TypeError):
        raise UsageError(f"{address!r} is not an Ethereum address") from None
