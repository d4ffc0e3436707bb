"""Storage leases per consumer and provider, and where a file's shares go.

Theory of operation
-------------------
A storage lease reserves capacity on one provider for a term and holds every object its
consumer keeps there; files do not get leases of their own. So placing a file is: pick
providers (``candidates``), then for each one (``ensure``) reuse a live lease of ours with room
and enough term left, extend its term if it falls short, or open a new one that reserves at
least ``reserve_bytes`` so that later files fit without a transaction. Only opening and
extending move money; once an account holds its leases, storing costs no transaction.

Room is tracked locally: a lease's quota and used bytes are read from its provider once, and
every byte promised to an upload in progress is counted against it, so concurrent uploads
never overbook a lease and small files cost no extra round trip. When the estimate says a lease
is full it is read again (deletions free room) before a new lease is opened.

Chain transactions are sent one at a time (``Ledger`` approves exactly the escrow each lease
needs, so two concurrent openings would race on the allowance); waiting for providers to
accept runs in parallel.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from dataclasses import dataclass, replace

from nuclux.chain import Ledger
from nuclux.chain.ledger import ProviderInfo
from nuclux.core.lease import Lease, LeaseState
from nuclux.core.spread import spread_order
from nuclux.core.types import LeaseId, ResourceClass, Wei
from nuclux.errors import ChainError, NucluxError
from nuclux.net.client import NodeClient
from nuclux.sdk.market import Market, MarketSettings
from nuclux.sdk.market_leases import market_placements
from nuclux.sdk.peers import PEER_ERRORS, Peers, Probe
from nuclux.sdk.settings import NotEnoughProviders, StorageSettings

LIVE = (LeaseState.ACTIVE, LeaseState.ACTIVE_TICKETED)
STORAGE = ResourceClass.STORAGE


@dataclass(frozen=True, slots=True)
class Placement:
    """One provider and the lease of ours that holds what we put there."""

    provider: ProviderInfo
    lease_id: LeaseId
    client: NodeClient


@dataclass(slots=True)
class _Room:
    quota: int
    used: int  # as last read, plus what we promised since


class LeaseBook:
    def __init__(self, ledger: Ledger, peers: Peers, settings: StorageSettings) -> None:
        self.ledger = ledger
        self.peers = peers
        self.settings = settings
        self._mine: dict[int, Lease] | None = None
        self._room: dict[int, _Room] = {}
        self._tx = asyncio.Lock()
        self._buying = asyncio.Lock()
        self._probes: tuple[float, int, list[Probe]] | None = None  # (when, chain time, probes)
        self._epoch: tuple[float, int] | None = None
        self._epoch_read: asyncio.Future[int] | None = None
        self.transactions = 0  # sent by this book (opening, extending)
        self.market = Market(
            ledger,
            MarketSettings(
                poll_interval=min(settings.poll_interval, 0.25),
                accept_timeout=settings.accept_timeout,
            ),
        )

    # ------------------------------------------------------------------ our leases

    async def mine(self, *, refresh: bool = False) -> list[Lease]:
        """Our live storage leases (read from the chain once, then kept up to date)."""
        if self._mine is None or refresh:
            me = self.ledger.address.lower()
            head = await self.ledger.conn.block_number()
            events = await self.ledger.registry_events(self.ledger.deployment.block, head)
            ids = [
                int(e.args["id"])
                for e in events
                if e.name == "LeaseOpened"
                and str(e.args["consumer"]).lower() == me
                and int(e.args["cls"]) == STORAGE
            ]
            leases = await asyncio.gather(*(self.ledger.lease(i) for i in ids))
            self._mine = {lease.id: lease for lease in leases if lease.state in LIVE}
            for lease in self._mine.values():
                self.peers.remember(lease)
        return sorted(self._mine.values(), key=lambda lease: lease.id)

    async def _with(self, provider: str) -> list[Lease]:
        return [x for x in await self.mine() if x.provider.lower() == provider.lower()]

    # ------------------------------------------------------------------ choosing providers

    async def candidates(
        self,
        need_bytes: int,
        max_price: int | None,
        exclude: frozenset[str] | set[str] = frozenset(),
        avoid: Iterable[str] = (),
    ) -> list[Probe]:
        """Usable providers, best first: ours (no transaction), then cheapest, ties at random;
        then spread: the best of each network not in ``avoid`` before the others
        (``nuclux.core.spread``). Unreachable, draining, suspended, overpriced and full ones
        are left out."""
        now, probes = await self._probe_all()
        probes = [
            p
            for p in probes
            if p.provider.suspended_until <= now
            and (
                max_price is None
                or self.settings.use_market  # at auction the reserve is the cap, not posted prices
                or p.provider.price[STORAGE] <= max_price
            )
            and p.provider.owner.lower() not in exclude
        ]
        held = {x.provider.lower() for x in await self.mine()}
        usable = [
            replace(p, held=p.provider.owner.lower() in held)
            for p in probes
            if p.reachable and not p.draining
        ]
        usable = [p for p in usable if p.held or (p.free_bytes or 0) >= need_bytes]
        random.shuffle(usable)
        usable.sort(key=lambda p: (not p.held, p.provider.price[STORAGE]))
        return spread_order(usable, lambda p: p.network, avoid)

    async def _probe_all(self) -> tuple[int, list[Probe]]:
        """Chain time and a probe of every active provider, reused for ``directory_ttl``."""
        ttl = self.settings.directory_ttl
        clock = asyncio.get_running_loop().time()
        if self._probes is None or clock - self._probes[0] > ttl:
            infos = [p for p in await self.peers.registry(max_age=ttl) if p.status == "active"]
            now = await self.ledger.conn.now()
            probes = await asyncio.gather(
                *(self.peers.probe(p, self.settings.probe_timeout) for p in infos)
            )
            self._probes = (clock, now, list(probes))
        return self._probes[1], self._probes[2]

    def invalidate(self) -> None:
        """Probe providers afresh next time (after one failed)."""
        self._probes = None

    async def epoch(self) -> int:
        """The chain's current epoch, read at most a few seconds ago."""
        clock = asyncio.get_running_loop().time()
        fresh = min(self.settings.directory_ttl, self.ledger.deployment.params.epoch_length / 8)
        if self._epoch is None or clock - self._epoch[0] > fresh:
            if self._epoch_read is None:  # one read for every placement asking at once
                self._epoch_read = asyncio.ensure_future(self.ledger.epoch())
            read = self._epoch_read
            try:
                epoch = await asyncio.shield(read)
            finally:
                if self._epoch_read is read and read.done():
                    self._epoch_read = None
            self._epoch = (clock, epoch)
        return self._epoch[1]

    # ------------------------------------------------------------------ leases with room

    async def ensure(
        self,
        probes: list[Probe],
        count: int,
        need_bytes: int,
        days: float,
        max_price: int | None,
        avoid: Iterable[str] = (),
    ) -> list[Placement]:
        """``count`` placements on distinct providers from ``probes`` (in order), each with
        ``need_bytes`` promised on a lease with at least ``days`` of term left. Providers that
        decline or fail are skipped for the next ones. An auction keeps its winners out of
        the networks in ``avoid`` where it can (``probes`` are in spread order already)."""
        want = self.settings.epochs_for(days, self.ledger.deployment.params.epoch_length)
        if self.settings.use_market:  # new leases through auctions (nuclux.sdk.market_leases)
            async with self._buying:  # one auction at a time; later callers reuse its leases
                return await market_placements(
                    self, probes, count, need_bytes, want, max_price, avoid
                )
        queue = list(probes)
        out: list[Placement] = []
        failures: list[str] = []
        while len(out) < count:
            if len(queue) < count - len(out):
                raise NotEnoughProviders(
                    f"only {len(out) + len(queue)} of the {count} providers needed could take"
                    f" {need_bytes} bytes" + (f" ({'; '.join(failures)})" if failures else "")
                )
            batch, queue = queue[: count - len(out)], queue[count - len(out) :]
            results = await self._place_batch(batch, need_bytes, want, max_price)
            for probe, result in zip(batch, results, strict=True):
                if isinstance(result, Placement):
                    out.append(result)
                else:
                    failures.append(f"{probe.provider.owner[:10]}: {result}")
        return out

    async def _place_batch(
        self, batch: list[Probe], need: int, want: int, max_price: int | None
    ) -> list[Placement | str]:
        # existing leases first, in parallel (one usage read at most each)
        found = await asyncio.gather(
            *(self._reuse(p.provider, need, want) for p in batch), return_exceptions=True
        )
        results: list[Placement | str | None] = []
        for item in found:
            if isinstance(item, BaseException):
                results.append(f"{item}")
            else:
                results.append(item)
        # then open what is missing: one approval for all, the opens sent at once (the
        # transaction queue numbers them), and wait for all acceptances
        missing = [i for i, r in enumerate(results) if r is None]
        terms = {i: self._terms(batch[i], need, want, max_price) for i in missing}
        opened: dict[int, LeaseId] = {}
        async with self._tx:
            try:
                await self.ledger.approve_escrow(sum(t[3] for t in terms.values()))
                outcomes = await asyncio.gather(
                    *(self._open(batch[i], terms[i]) for i in missing), return_exceptions=True
                )
            except (ChainError, NucluxError) as err:
                outcomes = [err] * len(missing)
        for i, outcome in zip(missing, outcomes, strict=True):
            if isinstance(outcome, ChainError | NucluxError):
                results[i] = f"could not open a lease: {outcome}"
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                opened[i] = outcome
        accepted = await self._acceptances(list(opened.values())) if opened else []
        for (i, lid), ok in zip(opened.items(), accepted, strict=True):
            if ok is True:
                self._promise(lid, need)
                info = batch[i].provider
                results[i] = Placement(info, lid, self.peers.client(info))
            else:
                results[i] = f"lease {lid} not accepted ({ok})"
        return [r if r is not None else "no lease" for r in results]

    async def _reuse(self, info: ProviderInfo, need: int, want: int) -> Placement | None:
        """A live lease of ours on ``info`` with room for ``need`` more bytes; its term is
        extended first if it has less than ``want`` epochs left."""
        client = self.peers.client(info)
        for lease in await self._with(info.owner):
            room = self._room.get(lease.id)
            if room is None or room.quota - room.used < need:
                usage = await client.usage(lease.id)
                room = _Room(int(usage["quota_bytes"]), int(usage["used_bytes"]))
                self._room[lease.id] = room
            if room.quota - room.used < need:
                continue
            await self._keep_term(lease, want)
            self._promise(lease.id, need)
            return Placement(info, lease.id, client)
        return None

    async def reuse(self, info: ProviderInfo, need: int, want: int) -> Placement | None:
        return await self._reuse(info, need, want)

    def promise(self, lease_id: int, nbytes: int) -> None:
        self._promise(lease_id, nbytes)

    def adopt(self, lease: Lease) -> None:
        """Keep a lease just won and accepted (its room is all free)."""
        self._refresh(lease)
        self._room.setdefault(lease.id, _Room(lease.units * self.settings.unit_bytes, 0))

    def _promise(self, lease_id: int, nbytes: int) -> None:
        room = self._room.get(lease_id)
        if room is not None:
            room.used += nbytes

    def forget_room(self, lease_id: int) -> None:
        """Read the lease's usage again next time (after deletions)."""
        self._room.pop(lease_id, None)

    async def _keep_term(self, lease: Lease, want: int) -> None:
        epoch = await self.epoch()
        left = lease.end_epoch - epoch
        slack = int(want * self.settings.term_slack)
        if left >= want - slack or lease.state is not LeaseState.ACTIVE:
            return  # enough term left, or an extension is already pending
        await self.extend(lease, want - left)

    async def extend(self, lease: Lease, epochs: int) -> Wei:
        """Ask ``lease``'s provider for ``epochs`` more of its term at the lease's own price
        (the provider must accept; until then the lease is active-ticketed); the escrow added:
        price x units x epochs. Used when a file needs a longer term and by renewal."""
        cost = Wei(lease.price * lease.units * epochs)
        async with self._tx:
            await self.ledger.extend(lease.id, epochs, cost)
            self.transactions += 1
        self._refresh(await self.peers.lease(lease.id, fresh=True))
        return cost

    def note(self, lease: Lease) -> None:
        """Keep a lease as just read from the chain (its state or end changed)."""
        self._refresh(lease)

    def _terms(
        self, probe: Probe, need: int, want: int, max_price: int | None
    ) -> tuple[int, int, int, int]:
        """(units, term, price cap, escrow) of a new lease at ``probe``'s posted price."""
        units = self.settings.units_for(need)
        price = probe.provider.price[STORAGE]
        cap = price if max_price is None else max_price
        return units, want, cap, max(1, price * units * want)

    async def _open(self, probe: Probe, terms: tuple[int, int, int, int]) -> LeaseId:
        """One open, its escrow approved already (``_place_batch`` holds ``_tx``)."""
        units, want, cap, escrow = terms
        lid = await self.ledger.open_lease(
            probe.provider.owner, STORAGE, units, want, cap, escrow, approved=True
        )
        self.transactions += 1
        return lid

    async def _acceptances(self, ids: list[LeaseId]) -> list[bool | str]:
        """Wait until the providers answer the new leases: True for accepted, else why not.
        One poller reads all of them each round (the chain is not hammered per lease); a
        lease not accepted in time is cancelled (a ticket is refunded in full)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.accept_timeout
        out: dict[int, bool | str] = {}
        while True:
            waiting = [lid for lid in ids if lid not in out]
            leases = await asyncio.gather(*(self.peers.lease(lid, fresh=True) for lid in waiting))
            for lease in leases:
                if lease.state in LIVE:
                    self._refresh(lease)
                    quota = lease.units * self.settings.unit_bytes
                    self._room.setdefault(lease.id, _Room(quota, 0))
                    out[lease.id] = True
                elif lease.state is not LeaseState.TICKETED:
                    out[lease.id] = f"the provider declined: {lease.state.label}"
            if len(out) == len(ids):
                return [out[lid] for lid in ids]
            if loop.time() >= deadline:
                break
            await asyncio.sleep(self.settings.poll_interval)
        for lid in ids:
            if lid not in out:
                async with self._tx:
                    try:
                        await self.ledger.cancel(lid)
                        self.transactions += 1
                    except ChainError:
                        pass
                out[lid] = f"not accepted within {self.settings.accept_timeout:g} s; cancelled"
        return [out[lid] for lid in ids]

    def _refresh(self, lease: Lease) -> None:
        self.peers.remember(lease)
        if self._mine is not None:
            if lease.state in LIVE:
                self._mine[lease.id] = lease
            else:
                self._mine.pop(lease.id, None)


__all__ = ["PEER_ERRORS", "LeaseBook", "Placement"]
