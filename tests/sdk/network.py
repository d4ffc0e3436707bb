"""An in-process Nuclux network for SDK tests: an embedded chain, six provider nodes serving
over TLS on loopback, and funded consumer accounts, all in the test session's event loop.

Nodes are real ``NodeRuntime``s (store, follower, lease agent, API server) found by the SDK
only through the registry. Leases reserve units of 1 MiB here (``UNIT_BYTES``) so tests
stay small; the chain is never reverted under running nodes, so tests share its state and
use fresh files (and, where it matters, their own consumer account).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from eth_account.signers.local import LocalAccount

from nuclux.chain import ChainConnection, Ledger
from nuclux.core.types import ONE_NUX
from nuclux.keys.derive import AccountKeys, from_private_key
from nuclux.node.config import NodeConfig
from nuclux.node.daemon import NodeRuntime
from nuclux.sdk import StorageClient, StorageSettings
from tests.chain.world import World, build_world, test_account
from tests.node.local_nodes import node_config

NODES = 6
POLL = 0.2  # node follower and agent: six of them share one embedded EVM with the tests
UNIT_BYTES = 1 << 20
SETTINGS = StorageSettings(
    unit_bytes=UNIT_BYTES,
    reserve_bytes=48 * UNIT_BYTES,
    default_days=1,
    request_timeout=5.0,
    probe_timeout=2.0,
    hedge_delay=0.3,
    manifest_grace=0.2,
    accept_timeout=20.0,
    poll_interval=0.1,
    use_market=False,  # these nodes run no bid agent; tests/sdk/test_market.py buys at auction
)


@dataclass
class Network:
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
            unit_bytes=UNIT_BYTES,
        )
        self.nodes[i] = rt
        return rt

    async def stop(self, i: int) -> None:
        rt = self.nodes[i]
        if rt is not None:
            self.nodes[i] = None
            await asyncio.wait_for(rt.stop(), timeout=30)

    def node_of(self, provider: str) -> NodeRuntime:
        for rt in self.nodes:
            if rt is not None and rt.cfg.owner.lower() == provider.lower():
                return rt
        raise KeyError(provider)

    def index_of(self, provider: str) -> int:
        for i, cfg in enumerate(self.configs):
            if cfg.owner.lower() == provider.lower():
                return i
        raise KeyError(provider)

    def ledger(self, account: LocalAccount) -> Ledger:
        return self.world.deployer.for_account(account)

    def keys(self, account: LocalAccount) -> AccountKeys:
        return from_private_key(bytes(account.key))

    def client(self, account: LocalAccount, settings: StorageSettings = SETTINGS) -> StorageClient:
        return StorageClient(self.ledger(account), self.keys(account), settings)

    async def new_account(self, label: str, nux: int = 5_000) -> LocalAccount:
        """A fresh funded consumer (gas and NuxCoin)."""
        return await self.fund(test_account(f"sdk/{label}"), nux)

    async def fund(self, acct: LocalAccount, nux: int = 5_000) -> LocalAccount:
        await self.conn.fund_gas(acct.address, 10**20)
        await self.world.deployer.transfer(acct.address, nux * ONE_NUX)
        return acct


async def start_network(tmp: Path) -> Network:
    conn = await ChainConnection.open("embedded")
    world = await build_world(conn, n_providers=NODES, n_consumers=2, register=NODES)
    # two nodes per /24 network (127.0.0.1, 127.0.1.1, 127.0.2.1): placement spreads a
    # file's shares across networks before it doubles up (nuclux.core.spread)
    net = Network(world, [node_config(tmp, world, i, f"127.0.{i // 2}.1") for i in range(NODES)])
    net.nodes = [None] * NODES
    for i in range(NODES):
        await net.start(i)
    return net


async def stop_network(net: Network) -> None:
    for i in range(NODES):
        await net.stop(i)
    await net.conn.close()
