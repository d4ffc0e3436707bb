"""Which providers a consumer may open a compute lease on.

Registered active, not suspended, with compute capacity, within the price cap (wei per
million fuel), and answering ``/v1/info`` with a compute service within a few seconds;
cheapest first, ties at random so that consumers spread over equal offers.
"""

from __future__ import annotations

import asyncio
import random

from nuclux.chain import Ledger
from nuclux.chain.ledger import ProviderInfo
from nuclux.core.types import ResourceClass
from nuclux.sdk.compute.settings import ComputeSettings
from nuclux.sdk.peers import PEER_ERRORS, Peers

COMPUTE = ResourceClass.COMPUTE
PROBE_TIMEOUT = 5.0


async def compute_providers(
    ledger: Ledger,
    peers: Peers,
    settings: ComputeSettings,
    skip: set[str],
    max_price: int | None,
) -> list[ProviderInfo]:
    """Usable compute providers not in ``skip`` (lower-case addresses), best first."""
    now = await ledger.conn.now()
    infos = [
        p
        for p in await peers.registry(max_age=settings.directory_ttl)
        if p.status == "active"
        and p.suspended_until <= now
        and p.capacity[COMPUTE] > 0
        and (max_price is None or p.price[COMPUTE] <= max_price)
        and p.owner.lower() not in skip
    ]
    answers = await asyncio.gather(*(offers_compute(peers, p) for p in infos))
    out = [p for p, ok in zip(infos, answers, strict=True) if ok]
    random.shuffle(out)
    out.sort(key=lambda p: p.price[COMPUTE])
    return out


async def offers_compute(peers: Peers, info: ProviderInfo) -> bool:
    """Whether the provider answers ``/v1/info`` with a compute service."""
    try:
        body = await asyncio.wait_for(peers.client(info).info(), PROBE_TIMEOUT)
    except (*PEER_ERRORS, KeyError, TypeError, ValueError):
        return False
    return isinstance(body, dict) and body.get("compute") is not None
