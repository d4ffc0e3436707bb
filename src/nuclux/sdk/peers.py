"""Providers as the SDK sees them: registry entries, one pinned ``NodeClient`` each, and the
lease -> provider lookups a reader needs.

A provider is reached only through what the chain says about it: its endpoint and the SHA-256
fingerprint of its TLS certificate from the registry; ``NodeClient`` refuses any other
certificate during the handshake. Clients are cached per (provider, endpoint, fingerprint), so
a re-registered provider gets a fresh connection pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import aiohttp

from nuclux.chain import Ledger
from nuclux.chain.ledger import ProviderInfo
from nuclux.core.lease import Lease
from nuclux.core.spread import network_of
from nuclux.core.types import ResourceClass
from nuclux.errors import NucluxError
from nuclux.net.client import NodeClient

T = TypeVar("T")

PEER_ERRORS = (NucluxError, OSError, aiohttp.ClientError, TimeoutError)
"""What a request to a provider can fail with: its refusal, the network, or our timeout."""


@dataclass(frozen=True, slots=True)
class Probe:
    """A provider's answer to ``GET /v1/info`` (None fields: it did not answer)."""

    provider: ProviderInfo
    free_bytes: int | None
    draining: bool
    error: str | None = None
    held: bool = False  # we hold a live lease there already

    @property
    def reachable(self) -> bool:
        return self.error is None

    @property
    def network(self) -> str:
        """The provider's network, its failure domain for placement (``nuclux.core.spread``)."""
        return network_of(self.provider.endpoint)


class Peers:
    """Registry lookups and connections, shared by every operation of one client."""

    def __init__(
        self, ledger: Ledger, eth_private_key: bytes, *, timeout: float, block_streams: bool = True
    ) -> None:
        self.ledger = ledger
        self._key = eth_private_key
        self._timeout = timeout
        self._block_streams = block_streams
        self._info: dict[str, ProviderInfo] = {}
        self._clients: dict[tuple[str, str, bytes], NodeClient] = {}
        self._leases: dict[int, Lease] = {}
        self._registry: tuple[float, list[ProviderInfo]] | None = None

    async def close(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

    # ------------------------------------------------------------------ registry

    async def registry(self, *, max_age: float = 0.0) -> list[ProviderInfo]:
        """Every registered provider, read from the chain at most ``max_age`` seconds ago."""
        now = asyncio.get_running_loop().time()
        if self._registry is not None and now - self._registry[0] <= max_age:
            return self._registry[1]
        infos = await self.ledger.providers()
        for info in infos:
            self._info[info.owner.lower()] = info
        self._registry = (now, infos)
        return infos

    async def provider(self, address: str) -> ProviderInfo:
        info = self._info.get(address.lower())
        if info is None:
            info = await self.ledger.provider(address)
            self._info[address.lower()] = info
        return info

    async def lease(self, lease_id: int, *, fresh: bool = False) -> Lease:
        lease = None if fresh else self._leases.get(lease_id)
        if lease is None:
            lease = await self.ledger.lease(lease_id)
            self._leases[lease_id] = lease
        return lease

    def remember(self, lease: Lease) -> None:
        self._leases[lease.id] = lease

    async def client_for_lease(self, lease_id: int) -> tuple[ProviderInfo, NodeClient]:
        """The provider holding ``lease_id`` (a storage lease) and a client for it."""
        lease = await self.lease(lease_id)
        if lease.cls is not ResourceClass.STORAGE:
            raise NucluxError(f"lease {lease_id} is not a storage lease")
        info = await self.provider(lease.provider)
        return info, self.client(info)

    # ------------------------------------------------------------------ connections

    def client(self, info: ProviderInfo) -> NodeClient:
        key = (info.owner.lower(), info.endpoint, info.cert_fingerprint)
        client = self._clients.get(key)
        if client is None:
            client = NodeClient(
                info.endpoint,
                info.cert_fingerprint,
                self._key,
                timeout=self._timeout,
                block_streams=self._block_streams,
            )
            self._clients[key] = client
        return client

    async def probe(self, info: ProviderInfo, timeout: float) -> Probe:
        """Ask a provider for its free capacity; unreachable ones carry the reason."""
        try:
            body = await asyncio.wait_for(self.client(info).info(), timeout)
            storage = body["storage"]
            free = int(storage["offered_bytes"]) - int(storage["reserved_bytes"])
            return Probe(info, free, bool(body.get("draining", False)))
        except TimeoutError:
            return Probe(info, None, False, f"no answer within {timeout:g} s")
        except (*PEER_ERRORS, KeyError, TypeError, ValueError) as err:
            return Probe(info, None, False, str(err) or type(err).__name__)


async def gather_answers(
    aws: Sequence[Awaitable[T]], *, timeout: float, grace: float
) -> list[T | BaseException]:
    """Run ``aws`` at once and return their outcomes in order (a value, or the exception,
    ``TimeoutError`` for one still running at the end). Stops waiting at ``timeout``, or
    ``grace`` seconds after the first one returned a value other than None: a reader of
    replicated objects wants every copy, but not to wait on a hung provider for them."""
    loop = asyncio.get_running_loop()
    tasks = [asyncio.ensure_future(a) for a in aws]
    deadline = loop.time() + timeout
    pending: set[asyncio.Future[T]] = set(tasks)
    while pending:
        left = deadline - loop.time()
        if left <= 0:
            break
        done, pending = await asyncio.wait(
            pending, timeout=left, return_when=asyncio.FIRST_COMPLETED
        )
        if any(
            not t.cancelled() and t.exception() is None and t.result() is not None for t in done
        ):
            deadline = min(deadline, loop.time() + grace)
    for t in pending:
        t.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    out: list[T | BaseException] = []
    for t in tasks:
        if t in pending or t.cancelled():
            out.append(TimeoutError(f"no answer within {timeout:g} s"))
        elif (exc := t.exception()) is not None:
            out.append(exc)
        else:
            out.append(t.result())
    return out
