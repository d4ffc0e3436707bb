"""Compute leases of one consumer: found, opened, shared out slot by slot, retired, recovered.

Theory of operation
-------------------
A compute lease reserves ``units`` concurrent job slots on one provider at its posted price
(wei per million fuel). Jobs take a slot of a lease (``take``) and give it back when their
payment is countersigned (``release``), so a lease never has more running or unpaid jobs
than the provider admits. Leases the consumer holds already (read from the chain once) are
used first; new ones are opened on providers registered active, with compute capacity, within
the price cap and answering ``/v1/info`` with a compute service, several at once (the
transactions one at a time, the waits for acceptance together). A provider that declines or
does not accept in time is skipped; its ticket is refunded.

A provider that fails (gone, hung, misbehaving) is *retired*: forgotten for the rest of the
client's life, its lease cancelled (after submitting the latest co-signed usage, so it is
paid exactly what was agreed) so that the lease closes and the rest of its escrow comes back
once the dispute window has passed (``recover``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass

from nuclux.chain import Ledger
from nuclux.chain.ledger import ProviderInfo
from nuclux.chain.usage import Usage
from nuclux.core.lease import Lease, LeaseState
from nuclux.core.types import LeaseId, ResourceClass
from nuclux.errors import ChainError, NucluxError
from nuclux.net.compute_client import ComputeNode
from nuclux.sdk.compute.directory import compute_providers
from nuclux.sdk.compute.market import market_leases
from nuclux.sdk.compute.settings import ComputeSettings, NoComputeProviders
from nuclux.sdk.market import Market, MarketSettings
from nuclux.sdk.peers import Peers

COMPUTE = ResourceClass.COMPUTE
LIVE = (LeaseState.ACTIVE, LeaseState.ACTIVE_TICKETED)


@dataclass(eq=False)
class ComputeLease:
    """One live compute lease of ours and the slots free on it."""

    lease: Lease
    info: ProviderInfo
    node: ComputeNode
    free: int

    @property
    def id(self) -> LeaseId:
        return self.lease.id

    @property
    def provider(self) -> str:
        return self.info.owner.lower()


class ComputeLeases:
    def __init__(self, ledger: Ledger, peers: Peers, settings: ComputeSettings) -> None:
        self.ledger = ledger
        self.peers = peers
        self.settings = settings
        self._held: dict[int, ComputeLease] | None = None
        self._nodes: dict[str, ComputeNode] = {}
        self.retired: dict[str, str] = {}  # provider -> why
        self.refusals: dict[str, str] = {}  # provider -> why the last lease was not opened
        self._tx = asyncio.Lock()
        self._opening = asyncio.Lock()
        self._changed = asyncio.Condition()
        self._epoch_read: tuple[float, int] | None = None
        self.transactions = 0
        self.market = Market(
            ledger,
            MarketSettings(
                poll_interval=min(settings.poll_interval, 0.25),
                accept_timeout=settings.accept_timeout,
            ),
        )

    # ------------------------------------------------------------------ what we hold

    async def held(self) -> list[ComputeLease]:
        """Our live compute leases on providers not retired (read from the chain once)."""
        if self._held is None:
            me = self.ledger.address.lower()
            mine = [
                x
                for x in await self.ledger.leases_of(self.ledger.address)
                if x.consumer.lower() == me and x.cls is COMPUTE and x.state in LIVE
            ]
            held: dict[int, ComputeLease] = {}
            for lease in mine:
                info = await self.peers.provider(lease.provider)
                if info.status == "active":
                    held[lease.id] = self._wrap(lease, info)
            if self._held is None:
                self._held = held
        return [x for x in self._held.values() if x.provider not in self.retired]

    async def adopt(self, lease: Lease) -> ComputeLease | None:
        """Hold a lease just won at auction (None if its provider is not active)."""
        info = await self.peers.provider(lease.provider)
        if info.status != "active":
            return None
        cl = self._wrap(lease, info)
        await self.held()
        if self._held is not None:
            self._held[lease.id] = cl
        async with self._changed:
            self._changed.notify_all()
        return cl

    def _wrap(self, lease: Lease, info: ProviderInfo) -> ComputeLease:
        self.peers.remember(lease)
        return ComputeLease(lease, info, self.node(info), lease.units)

    def node(self, info: ProviderInfo) -> ComputeNode:
        """One ``ComputeNode`` per provider (it remembers which modules the node holds)."""
        key = info.owner.lower()
        node = self._nodes.get(key)
        if node is None or node.client is not self.peers.client(info):
            node = self._nodes[key] = ComputeNode(self.peers.client(info))
        return node

    # ------------------------------------------------------------------ slots

    async def take(
        self, exclude: set[str], *, fuel_limit: int, max_price: int | None
    ) -> ComputeLease:
        """A slot on a lease whose provider is not in ``exclude``: a free one, else the next
        one freed, else on a lease opened on a new provider (``NoComputeProviders`` if none)."""
        while True:
            usable = [x for x in await self._serving() if x.provider not in exclude]
            free = [x for x in usable if x.free > 0]
            if free:
                random.shuffle(free)  # spread jobs over equally free leases
                best = max(free, key=lambda x: x.free)
                best.free -= 1
                return best
            if usable:
                await self._wait_slot(usable)
                continue
            async with self._opening:
                if not [x for x in await self.held() if x.provider not in exclude]:
                    got = await self.ensure(
                        1, exclude=exclude, fuel_limit=fuel_limit, max_price=max_price
                    )
                    if not got:
                        raise NoComputeProviders(
                            "no compute provider could take the job (active, with compute"
                            " capacity, within --max-price, answering, not tried already"
                            + (f"; {self._why()}" if self.retired or self.refusals else "")
                            + ")"
                        )

    async def _serving(self) -> list[ComputeLease]:
        """Held leases whose provider the registry (read at most ``directory_ttl`` ago)
        still lists as active; the others are retired (leases cancelled)."""
        held = await self.held()
        registry = await self.peers.registry(max_age=self.settings.directory_ttl)
        active = {p.owner.lower() for p in registry if p.status == "active"}
        for x in held:
            if x.provider not in active:
                await self.retire(x, "no longer active in the registry", None)
        epoch = await self._epoch()
        ended = [x for x in held if x.lease.end_epoch <= epoch]
        for x in ended:  # its term is over: the provider serves it no more
            if self._held is not None:
                self._held.pop(x.id, None)
        return [x for x in held if x.provider in active and x not in ended]

    async def _epoch(self) -> int:
        """The chain's epoch, read at most ``directory_ttl`` seconds ago."""
        clock = asyncio.get_running_loop().time()
        if self._epoch_read is None or clock - self._epoch_read[0] > self.settings.directory_ttl:
            self._epoch_read = (clock, await self.ledger.epoch())
        return self._epoch_read[1]

    async def _wait_slot(self, usable: list[ComputeLease]) -> None:
        async with self._changed:
            await self._changed.wait_for(
                lambda: any(x.free > 0 or x.provider in self.retired for x in usable)
            )

    async def release(self, cl: ComputeLease) -> None:
        async with self._changed:
            cl.free += 1
            self._changed.notify_all()

    def _why(self) -> str:
        told = {**self.refusals, **self.retired}
        return "; ".join(f"{p[:10]}: {why}" for p, why in list(told.items())[:4])

    # ------------------------------------------------------------------ opening

    async def candidates(self, exclude: set[str], max_price: int | None) -> list[ProviderInfo]:
        """Providers we could open a lease on (``nuclux.sdk.compute.directory``), leaving out
        those held, excluded or retired."""
        held = {x.provider for x in await self.held()}
        skip = held | exclude | set(self.retired)
        return await compute_providers(self.ledger, self.peers, self.settings, skip, max_price)

    async def ensure(
        self, count: int, *, exclude: set[str], fuel_limit: int, max_price: int | None
    ) -> list[ComputeLease]:
        """Leases on up to ``count`` distinct providers not in ``exclude``: held ones first,
        then new ones (opened in parallel; declined ones replaced while candidates last)."""
        have = {x.provider: x for x in await self.held() if x.provider not in exclude}
        out = list(have.values())[:count]
        if len(out) >= count:
            return out
        if self.settings.use_market:
            won = await market_leases(self, count - len(out), exclude, fuel_limit, max_price)
            return out + won
        queue = await self.candidates(exclude, max_price)
        while len(out) < count and queue:
            batch, queue = queue[: count - len(out)], queue[count - len(out) :]
            opened = await asyncio.gather(
                *(self._open(p, fuel_limit, max_price) for p in batch), return_exceptions=True
            )
            for info, got in zip(batch, opened, strict=True):
                if isinstance(got, ComputeLease):
                    out.append(got)
                elif isinstance(got, BaseException) and not isinstance(got, NucluxError | OSError):
                    raise got
                else:
                    why = "not accepted in time or declined" if got is None else str(got)
                    self.refusals[info.owner.lower()] = why
        return out

    async def _open(
        self, info: ProviderInfo, fuel_limit: int, max_price: int | None
    ) -> ComputeLease | None:
        price = info.price[COMPUTE]
        epochs = self.settings.epochs_for(self.ledger.deployment.params.epoch_length)
        escrow = self.settings.escrow_for(fuel_limit, price)
        async with self._tx:
            lid = await self.ledger.open_lease(
                info.owner,
                COMPUTE,
                self.settings.units,
                epochs,
                price if max_price is None else max_price,
                escrow,
            )
            self.transactions += 1
        lease = await self._accepted(lid)
        if lease is None:
            return None
        cl = self._wrap(lease, info)
        await self.held()
        if self._held is not None:
            self._held[lid] = cl
        async with self._changed:
            self._changed.notify_all()
        return cl

    async def _accepted(self, lid: LeaseId) -> Lease | None:
        """The lease once its provider accepted it; None if declined or not in time (then
        cancelled: a ticket is refunded in full)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.accept_timeout
        while True:
            lease = await self.ledger.lease(lid)
            if lease.state in LIVE:
                return lease
            if lease.state is not LeaseState.TICKETED:
                return None
            if loop.time() >= deadline:
                break
            await asyncio.sleep(self.settings.poll_interval)
        async with self._tx:
            try:
                await self.ledger.cancel(lid)
                self.transactions += 1
            except ChainError:
                pass  # accepted or expired meanwhile
        return None

    async def top_up(self, cl: ComputeLease, fuel_limit: int) -> None:
        """Add another lease's worth of escrow (after ``EscrowExhausted``)."""
        amount = self.settings.escrow_for(fuel_limit, cl.lease.price)
        async with self._tx:
            await self.ledger.top_up(cl.id, amount)
            self.transactions += 1
        cl.lease = await self.ledger.lease(cl.id)

    async def top_up_to(self, cl: ComputeLease, escrow: int) -> None:
        """Bring a lease's escrow up to ``escrow`` (a lease won at auction holds only
        units x term x price)."""
        add = escrow - int(cl.lease.escrow)
        if add > 0:
            async with self._tx:
                await self.ledger.top_up(cl.id, add)
                self.transactions += 1
            cl.lease = await self.ledger.lease(cl.id)

    # ------------------------------------------------------------------ retiring

    async def retire(
        self, cl: ComputeLease, why: str, latest: tuple[Usage, bytes, bytes] | None
    ) -> None:
        """Stop using ``cl``'s provider; submit the latest co-signed usage (``latest``: the
        usage, our signature, the provider's) and cancel the lease so its escrow comes back."""
        if cl.provider in self.retired:
            return
        self.retired[cl.provider] = why
        async with self._changed:
            self._changed.notify_all()
        async with self._tx:
            if latest is not None:
                usage, ours, theirs = latest
                try:
                    await self.ledger.submit_usage(COMPUTE, usage, ours, theirs)
                    self.transactions += 1
                except ChainError:
                    pass  # the provider submitted it (or a later one) already
            for x in list((self._held or {}).values()):
                if x.provider == cl.provider:
                    try:
                        await self.ledger.cancel(x.id)
                        self.transactions += 1
                    except ChainError:
                        pass  # the lease ended meanwhile; recover() settles what is left

    async def recover(self) -> list[tuple[int, int]]:
        """Settle our compute leases that are closing and past their dispute window (the
        escrow not owed comes back); (lease id, wei refunded) for each. Live leases whose
        term is over are closed first (their dispute window starts; a later call settles)."""
        now = await self.ledger.conn.now()
        epoch = await self.ledger.epoch()
        me = self.ledger.address.lower()
        out: list[tuple[int, int]] = []
        for lease in await self.ledger.leases_of(self.ledger.address):
            if lease.consumer.lower() != me or lease.cls is not COMPUTE:
                continue
            if lease.state in LIVE and lease.end_epoch <= epoch:
                async with self._tx:
                    with contextlib.suppress(ChainError):  # closed meanwhile
                        await self.ledger.end_term(lease.id)
                        self.transactions += 1
                continue
            if lease.state is not LeaseState.CLOSING or lease.deadline > now:
                continue
            async with self._tx:
                try:
                    await self.ledger.settle(lease.id)
                    self.transactions += 1
                except ChainError:
                    continue
            settled = await self.ledger.lease(lease.id)
            out.append((lease.id, int(lease.escrow) - int(settled.escrow)))
        return out
