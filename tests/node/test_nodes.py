"""Several nodes in one process on the embedded chain: start, registration brought in line,
automatic acceptance of leases, storage over pinned TLS using only on-chain identities, and
a clean stop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from nuclux.core.lease import LeaseState
from nuclux.core.types import ONE_NUX, ResourceClass
from nuclux.errors import ConfigError, ProviderUnavailable
from nuclux.net.client import NodeClient
from nuclux.node.daemon import NodeRuntime
from tests.chain.world import PRICES, World
from tests.node.local_nodes import node_config


@pytest_asyncio.fixture
async def nodes(world: World, tmp_path: Path) -> AsyncIterator[list[NodeRuntime]]:
    w = world
    started: list[NodeRuntime] = []
    try:
        for i in range(3):
            cfg = node_config(tmp_path, w, i)
            started.append(
                await NodeRuntime.start(
                    cfg,
                    w.operators[i].account,
                    w.conn,
                    w.deployment,
                    poll_interval=0.1,
                    unit_bytes=1 << 20,
                )
            )
        yield started
    finally:
        for rt in started:
            await asyncio.wait_for(rt.stop(), timeout=30)


async def wait_state(w: World, lease_id: int, state: LeaseState, timeout: float = 10) -> None:
    for _ in range(int(timeout / 0.05)):
        if (await w.deployer.lease(lease_id)).state is state:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"lease {lease_id} never became {state.label}")


async def test_nodes_serve_leases_found_through_the_chain(
    world: World, nodes: list[NodeRuntime]
) -> None:
    w = world
    consumer = w.consumers[0]
    key = bytes(consumer.account.key)
    for i, rt in enumerate(nodes):
        info = await w.deployer.provider(rt.cfg.owner)
        # the node brought its registration in line with its configuration
        assert info.endpoint == rt.cfg.endpoint
        assert info.cert_fingerprint == rt.identity.fingerprint
        assert info.capacity == (4, 0, 0)
        lid = await consumer.open_lease(
            rt.cfg.owner, ResourceClass.STORAGE, 2, 5, PRICES[0], ONE_NUX
        )
        await wait_state(w, lid, LeaseState.ACTIVE)  # the agent accepted it
        async with NodeClient(info.endpoint, info.cert_fingerprint, key) as c:
            await c.put(lid, b"share", f"share {i}".encode())
            assert await c.get(lid, b"share") == f"share {i}".encode()
            assert (await c.usage(lid))["quota_bytes"] == 2 << 20
    assert sum(rt.agent.stats.accepted for rt in nodes) == 3


async def test_a_node_declines_what_it_cannot_hold(world: World, nodes: list[NodeRuntime]) -> None:
    w = world
    rt = nodes[0]
    big = await w.consumers[0].open_lease(
        rt.cfg.owner, ResourceClass.STORAGE, 5000, 5, PRICES[0], ONE_NUX
    )  # 5000 MiB > 4 GiB offered
    await wait_state(w, big, LeaseState.CLOSED)
    assert rt.agent.stats.declined >= 1


async def test_a_paused_provider_gets_no_new_leases(world: World, nodes: list[NodeRuntime]) -> None:
    w = world
    await w.operators[1].set_paused(True, provider=w.providers[1].address)
    with pytest.raises(ProviderUnavailable, match="paused"):
        await w.consumers[0].open_lease(
            w.providers[1].address, ResourceClass.STORAGE, 1, 1, PRICES[0], ONE_NUX
        )


async def test_a_node_refuses_to_start_with_the_wrong_operator(
    world: World, tmp_path: Path
) -> None:
    cfg = node_config(tmp_path, world, 2)
    with pytest.raises(ConfigError, match="operator"):
        await NodeRuntime.start(cfg, world.operators[0].account, world.conn, world.deployment)
