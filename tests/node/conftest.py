"""Fixtures of the node tests: ``served``, one node's API on loopback over the embedded chain
(a real TLS 1.3 server, the follower's view, a shard store and an accepted storage lease)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest_asyncio
from aiohttp import web

from nuclux.core.auth import ReplayGuard, RequestVerifier
from nuclux.core.types import ONE_NUX, ResourceClass
from nuclux.core.units import GIB
from nuclux.net.client import NodeClient
from nuclux.net.tls import NodeIdentity, server_ssl_context
from nuclux.node.follower import ChainView
from nuclux.node.revisions import RevisionSigner
from nuclux.node.server import NodeService
from nuclux.node.store import ShardStore
from tests.chain.world import PRICES, World


@dataclass
class Served:
    world: World
    service: NodeService
    view: ChainView
    identity: NodeIdentity
    url: str
    lease: int

    def client(self, who: int = 0, *, fingerprint: bytes | None = None) -> NodeClient:
        key = bytes(self.world.consumers[who].account.key)
        return NodeClient(self.url, fingerprint or self.identity.fingerprint, key)


@pytest_asyncio.fixture
async def served(world: World, tmp_path: Path) -> AsyncIterator[Served]:
    w = world
    provider = w.providers[0]
    lid = await w.consumers[0].open_lease(
        provider.address, ResourceClass.STORAGE, 1, 10, PRICES[0], ONE_NUX
    )
    await w.operators[0].accept(lid)
    view = ChainView(w.deployer)
    await view.catch_up()
    identity = NodeIdentity.generate(provider.address)
    store = await ShardStore.open(tmp_path / "store", 8 * GIB, grace_seconds=60)
    service = NodeService(
        owner=provider.address,
        operator=w.operators[0].address,
        fingerprint=identity.fingerprint,
        chain_id=w.conn.chain_id,
        store=store,
        view=view,
        verifier=RequestVerifier(identity.fingerprint, ReplayGuard(120)),
        max_object_bytes=64 << 20,
        revision_signer=RevisionSigner.for_ledger(w.operators[0]),
    )
    runner = service.runner()
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context(identity))
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Served(w, service, view, identity, f"https://127.0.0.1:{port}", lid)
    finally:
        await runner.cleanup()
        await store.close()
        view.close()
