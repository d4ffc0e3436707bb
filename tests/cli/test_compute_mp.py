"""Replicated and re-placed jobs with nodes as separate processes on anvil (issue 5's
integration): ``nuclux run --replicas 3`` with one node forging its results returns the
honest result and declines the liar's job; a node killed (SIGKILL) mid-job is replaced and
the job completes elsewhere."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from nuclux.net.client import NodeClient
from nuclux.node.localnet import LocalNode, start_nodes
from nuclux.sdk.peers import PEER_ERRORS
from tests.cli.test_compute_cli import Net
from tests.cli.test_devnet_cli import Cli

pytestmark = pytest.mark.anvil

EXAMPLES = Path(__file__).parents[2] / "examples" / "jobs"
PI = str(EXAMPLES / "pi.wasm")
HOSTILE = str(EXAMPLES / "testing" / "hostile.wasm")
LIAR = 2  # of three nodes: a job replicated three times always meets it
FUEL = ["--fuel", "2e9"]


@pytest.fixture(scope="module")
def mp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Net, list[LocalNode]]]:
    tmp = tmp_path_factory.mktemp("compute-mp")
    cli = Cli(tmp)
    cli.json("devnet", "up", "--accounts", "2", "--nux", "10000")
    try:
        state = tmp / "data" / "devnet"
        nodes = asyncio.run(start_nodes(state, 3, compute_units=2, corrupt_results=[LIAR]))
        yield Net(cli), nodes
    finally:
        cli.json("devnet", "down")  # stops the nodes it recorded too


def test_replicas_return_the_honest_result_and_decline_the_liar(
    mp: tuple[Net, list[LocalNode]], tmp_path: Path
) -> None:
    net, nodes = mp
    got = net.json(1, "run", PI, "--replicas", "3", "-o", str(tmp_path), *FUEL, "--", "5000", "9")
    assert got["ok"] is True
    assert got["stdout"].startswith("pi=3.")
    assert "forged" not in got["stdout"]
    assert [p.lower() for p in got["declined"]] == [nodes[LIAR].owner.lower()]
    assert len(got["providers"]) == 2
    (entry,) = [j for j in net.json(1, "jobs") if j["id"] == got["job"]]
    assert entry["state"] == "succeeded"
    assert entry["declined"] == got["declined"]


async def _busy_node(nodes: list[LocalNode], key: bytes, stop: threading.Event) -> int | None:
    clients = [NodeClient(n.endpoint, bytes.fromhex(n.fingerprint), key) for n in nodes]
    try:
        while not stop.is_set():
            for i, client in enumerate(clients):
                try:
                    info = await client.info()
                except PEER_ERRORS:  # the node is starting or gone
                    info = {}
                if info.get("compute") and info["compute"]["busy"] > 0:
                    return i
            await asyncio.sleep(0.05)
        return None
    finally:
        await asyncio.gather(*(c.close() for c in clients))


def test_a_node_killed_mid_job_is_replaced(mp: tuple[Net, list[LocalNode]], tmp_path: Path) -> None:
    net, nodes = mp
    outcome: dict[str, Result] = {}
    done = threading.Event()

    def job() -> None:
        try:
            outcome["res"] = net.run(
                1,
                "run",
                HOSTILE,
                "--json",
                "-o",
                str(tmp_path),
                "--timeout",
                "60s",
                *FUEL,
                "--",
                "sleep",
                "4",
            )
        finally:
            done.set()

    worker = threading.Thread(target=job)
    worker.start()
    try:
        victim = asyncio.run(_busy_node(nodes, os.urandom(32), done))
        assert victim is not None, "the job never started"
        killed = nodes[victim]
        os.kill(killed.pid, signal.SIGKILL)
        os.waitpid(killed.pid, 0)  # our child (started by start_nodes): reap it
        worker.join(timeout=240)
        assert not worker.is_alive()
    finally:
        done.set()
        worker.join(timeout=240)
    res = outcome["res"]
    assert res.exit_code == 0, res.output
    got: dict[str, Any] = json.loads(res.stdout)
    assert got["ok"] is True
    assert killed.owner.lower() not in [p.lower() for p in got["providers"]]
    assert got["stdout"].startswith("woke up")
