"""The market across processes: a devnet (anvil) whose provider nodes run their bid agents;
``nuclux put`` and ``nuclux run`` obtain their leases through auctions (the default), and
``nuclux market requests|bids|prices`` show them; bad input is refused with exit 2."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from tests.cli.test_devnet_cli import Cli

pytestmark = pytest.mark.anvil

EXAMPLES = Path(__file__).parents[2] / "examples" / "jobs"
SHA256 = str(EXAMPLES / "sha256.wasm")
NODES = 3
PRICE = 10**15  # the devnet nodes' posted (and so truthful) price per unit


class Net:
    def __init__(self, cli: Cli) -> None:
        self.cli = cli
        accounts = cli.json("devnet", "status")["accounts"]
        self.keys = {i: a["private_key"] for i, a in enumerate(accounts)}
        self.addresses = {i: a["address"] for i, a in enumerate(accounts)}

    def run(self, who: int, *args: str) -> Result:
        env = {"KEY": self.keys[who], "NUCLUX_MARKET": "true"}
        return self.cli.run(*args, "--private-key-env", "KEY", env=env)

    def json(self, who: int, *args: str) -> Any:
        res = self.run(who, *args, "--json")
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)

    def read(self, *args: str) -> Any:
        return self.cli.json("market", *args)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    cli = Cli(tmp_path_factory.mktemp("market-cli"))
    cli.json(
        "devnet", "up", "--accounts", "2", "--nux", "10000", "--nodes", str(NODES),
        "--auction-window", "3",
    )  # fmt: skip
    try:
        yield Net(cli)
    finally:
        cli.json("devnet", "down")


def _leases_of(net: Net, who: int, cls: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = net.cli.json("lease", "list", net.addresses[who])
    me = net.addresses[who].lower()
    return [r for r in rows if r["class"] == cls and r["consumer"].lower() == me]


def test_put_and_run_obtain_leases_at_auction(net: Net, tmp_path: Path) -> None:
    assert net.read("requests") == []
    data = os.urandom(100_000)
    (tmp_path / "f.bin").write_bytes(data)
    put = net.json(1, "put", str(tmp_path / "f.bin"), "--k", "2", "--n", "3")
    requests = net.read("requests")
    assert len(requests) == 1  # one auction for the three providers the file needed
    storage = requests[0]
    assert storage["class"] == "storage"
    assert storage["status"] == "cleared"
    assert storage["m"] == 3
    assert storage["winners"] == 3
    assert storage["reserve_wei"] == PRICE  # no reference price yet: the highest posted
    assert storage["price_wei"] == PRICE  # every node bid its cost; fewer than m + 1 bids
    bids = net.read("bids", str(storage["id"]))["bids"]
    assert len(bids) == NODES
    assert all(b["revealed"] and b["price_wei"] == PRICE for b in bids)
    leases = _leases_of(net, 1, "storage")
    assert len(leases) == 3
    assert all(x["state"] == "active" and x["price_wei"] == PRICE for x in leases)
    got = net.run(1, "get", put["reference"], "-o", str(tmp_path / "back.bin"))
    assert got.exit_code == 0, got.output
    assert (tmp_path / "back.bin").read_bytes() == data

    job = net.json(
        1, "run", SHA256, "--input", str(tmp_path / "f.bin"), "--fuel", "2e9",
        "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert job["ok"] is True
    assert (tmp_path / "out" / "sha256.txt").read_text().split()[0] in job["stdout"]
    compute = net.read("requests")[0]
    assert compute["class"] == "compute"
    assert compute["status"] == "cleared"
    assert compute["m"] == 1  # one replica: one provider
    assert compute["winners"] == 1
    assert compute["price_wei"] == PRICE  # the second-lowest of three equal bids
    held = [x["provider"].lower() for x in _leases_of(net, 1, "compute")]
    assert [p.lower() for p in job["providers"]] == held


def test_prices_and_bad_input(net: Net) -> None:
    prices = net.read("prices")
    assert [p["class"] for p in prices] == ["storage", "compute", "bandwidth"]
    storage = net.read("prices", "--class", "storage")
    assert storage["reference_wei"] == PRICE  # 3 staked bidders: the auction counts
    assert [h["price_wei"] for h in storage["history"]][:1] == [PRICE]
    res = net.cli.run("market", "prices", "--class", "gold")
    assert res.exit_code == 2
    assert "unknown resource class 'gold'" in res.output
    res = net.cli.run("market", "bids", "999")
    assert res.exit_code == 2
    assert "no auction request 999" in res.output
    res = net.run(1, "put", "/nonexistent-file", "--no-market")
    assert res.exit_code == 2
