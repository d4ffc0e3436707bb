"""An in-process compute network for SDK tests: an embedded chain and four provider nodes
with two compute slots each (real wasmtime worker pools), serving over TLS on loopback.

Like ``tests/sdk/network.py``, but the nodes offer compute. A node can be made to forge every
result at run time (``liar``), or be crashed mid-request (``crash``: its connections dropped
at once, as a killed process would, without waiting for the jobs it runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from eth_account.signers.local import LocalAccount

from nuclux.chain import ChainConnection, Ledger
from nuclux.core.job import JobLimits
from nuclux.core.types import ONE_NUX
from nuclux.keys.derive import from_private_key
from nuclux.node.config import NodeConfig, save_config
from nuclux.node.daemon import NodeRuntime
from nuclux.sdk import ComputeClient, ComputeSettings
from tests.chain.world import PRICES, World, build_world, test_account
from tests.node.local_nodes import node_config

NODES = 4
SLOTS = 2
POLL = 0.2
LIMITS = JobLimits(
    fuel=2 * 10**9,
    memory_bytes=16 << 20,
    timeout_ms=10_000,
    stdout_bytes=64 << 10,
    stderr_bytes=64 << 10,
    output_bytes=1 << 20,
    scratch_bytes=8 << 20,
)
SETTINGS = ComputeSettings(
    units=1,
    request_grace=5.0,
    accept_timeout=20.0,
    poll_interval=0.1,
    escrow_jobs=40,
    directory_ttl=5.0,
    use_market=False,  # these nodes run no bid agent
)


@dataclass
class ComputeNetwork:
    world: World
    configs: list[NodeConfig]
    nodes: list[NodeRuntime | None] = field(default_factory=list)

    @property
    def conn(self) -> ChainConnection:
        return self.world.conn

    async def start(self, i: int) -> NodeRuntime:
        rt = await NodeRuntime.start(
            self.configs[i],
            self.world.operators[i].account,
            self.conn,
            self.world.deployment,
            poll_interval=POLL,
            unit_bytes=1 << 20,
        )
        self.nodes[i] = rt
        return rt

    async def stop(self, i: int) -> None:
        rt = self.nodes[i]
        if rt is not None:
            self.nodes[i] = None
            await asyncio.wait_for(rt.stop(), timeout=60)

    async def crash(self, i: int) -> None:
        """Drop node ``i``'s connections at once (requests in flight get no answer)."""
        rt = self.nodes[i]
        if rt is None:
            return
        self.nodes[i] = None
        rt.stop_event.set()
        rt.service._stopping = True  # refuse anything new while it goes
        server = rt.runner.server
        with contextlib.suppress(Exception):
            for site in list(rt.runner.sites):
                await site.stop()
            for handler in list(server.connections if server is not None else ()):
                if handler.transport is not None:
                    handler.transport.abort()  # the client sees its connection reset
        with contextlib.suppress(Exception):
            await asyncio.wait_for(rt.stop(), timeout=60)

    def index_of(self, provider: str) -> int:
        for i, cfg in enumerate(self.configs):
            if cfg.owner.lower() == provider.lower():
                return i
        raise KeyError(provider)

    def node_of(self, provider: str) -> NodeRuntime:
        rt = self.nodes[self.index_of(provider)]
        if rt is None:
            raise KeyError(provider)
        return rt

    def ledger(self, account: LocalAccount) -> Ledger:
        return self.world.deployer.for_account(account)

    def client(self, account: LocalAccount, settings: ComputeSettings = SETTINGS) -> ComputeClient:
        keys = from_private_key(bytes(account.key))
        return ComputeClient(self.ledger(account), keys, settings)

    async def new_account(self, label: str, nux: int = 5_000) -> LocalAccount:
        acct = test_account(f"sdk-compute/{label}")
        await self.conn.fund_gas(acct.address, 10**20)
        await self.world.deployer.transfer(acct.address, nux * ONE_NUX)
        return acct


async def start_compute_network(tmp: Path) -> ComputeNetwork:
    conn = await ChainConnection.open("embedded")
    world = await build_world(conn, n_providers=NODES, n_consumers=1, register=NODES)
    configs = []
    for i in range(NODES):
        cfg = dataclasses.replace(
            node_config(tmp, world, i), compute_units=SLOTS, price_compute=PRICES[1]
        )
        save_config(cfg, overwrite=True)
        configs.append(cfg)
    net = ComputeNetwork(world, configs, [None] * NODES)
    try:
        for i in range(NODES):
            await net.start(i)
    except BaseException:
        await stop_compute_network(net)
        raise
    return net


async def stop_compute_network(net: ComputeNetwork) -> None:
    for i in range(NODES):
        with contextlib.suppress(Exception):
            await net.stop(i)
    await net.conn.close()
