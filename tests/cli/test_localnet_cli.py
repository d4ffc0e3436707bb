"""`nuclux devnet up --nodes N`: a local network of registered, serving provider nodes that
`nuclux devnet down` stops, and that a consumer can use right away."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from eth_account import Account

from nuclux.chain import ChainConnection, Deployment, Ledger
from nuclux.core.lease import LeaseState
from nuclux.core.types import ONE_NUX, ResourceClass
from nuclux.net.client import NodeClient
from tests.cli.test_devnet_cli import Cli

pytestmark = pytest.mark.anvil


async def _store_and_read(rpc: str, deployment: Path, consumer_key: str, owner: str) -> bytes:
    conn = await ChainConnection.open(rpc)
    try:
        ledger = Ledger(conn, Deployment.load(deployment), Account.from_key(consumer_key))
        info = await ledger.provider(owner)
        lid = await ledger.open_lease(owner, ResourceClass.STORAGE, 1, 20, 10**16, ONE_NUX)
        for _ in range(200):  # the node's agent accepts the ticket by itself
            if (await ledger.lease(lid)).state is LeaseState.ACTIVE:
                break
            await asyncio.sleep(0.1)
        data = os.urandom(100_000)
        async with NodeClient(
            info.endpoint, info.cert_fingerprint, bytes.fromhex(consumer_key[2:])
        ) as c:
            await c.put(lid, b"hello", data)
            assert await c.get(lid, b"hello") == data
        return data
    finally:
        await conn.close()


def test_devnet_up_with_nodes_then_down(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    try:
        up = cli.json("devnet", "up", "--accounts", "1", "--nux", "100", "--nodes", "2")
        assert [n["running"] for n in up["nodes"]] == [True, True]
        status = cli.json("devnet", "status")
        assert [n["pid"] for n in status["nodes"]] == [n["pid"] for n in up["nodes"]]
        assert all(n["running"] for n in status["nodes"])
        again = cli.run("devnet", "up", "--nodes", "1")
        assert again.exit_code != 0  # one devnet at a time
        deployment = tmp_path / "data" / "devnet" / "deployment.json"
        consumer = status["accounts"][1]["private_key"]
        for node in up["nodes"]:
            asyncio.run(_store_and_read(up["rpc_url"], deployment, consumer, node["owner"]))
    finally:
        down = cli.json("devnet", "down")
    assert down["nodes_stopped"] == 2
    for node in up["nodes"]:
        assert (
            not Path(f"/proc/{node['pid']}").exists()
            or b"run" not in Path(f"/proc/{node['pid']}/cmdline").read_bytes()
        )
    assert cli.json("devnet", "status")["nodes"] == []
