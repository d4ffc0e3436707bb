"""``nuclux demo`` runs the whole lease lifecycle on the embedded chain and conserves tokens."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from nuclux.cli.main import app


def _env(tmp_path: Path) -> dict[str, str]:
    cfg = tmp_path / "config.toml"
    cfg.write_text("")
    return {"NUCLUX_CONFIG": str(cfg), "NUCLUX_DATA_DIR": str(tmp_path / "data")}


def test_demo_json_summary_is_consistent(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--json"], env=_env(tmp_path))
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    balances = data["balances_wei"]
    assert sum(balances.values()) == data["supply_wei"]  # nothing minted or burned
    assert data["escrow_wei"] == 0  # every lease settled or refunded
    states = {x["class"]: x["state"] for x in data["leases"]}
    assert states == {"storage": "closed", "compute": "closed", "bandwidth": "closed"}
    by_class = {x["class"]: x for x in data["leases"]}
    assert by_class["bandwidth"]["paid_wei"] == 0  # declined: nothing paid
    storage = by_class["storage"]  # every epoch vouched for by a proof: units x price x epochs
    assert storage["paid_wei"] == storage["units"] * storage["price_wei"] * storage["epochs"]
    compute = by_class["compute"]  # metered: the latest co-signed receipt total (30 Mfuel)
    assert compute["paid_wei"] == 30 * compute["price_wei"]
    one = 10**18
    node = data["node"]
    assert node["read_back_ok"] is True
    assert node["bytes"] > 0
    job = data["compute"]  # a real job on the node: paid fuel used x price, to the wei
    assert job["stdout"].split()[:2] == ["2", "13"]
    assert job["fuel_used"] > 0
    assert job["paid_wei"] == job["cost_wei"] == job["expected_wei"] > 0
    assert job["paid_wei"] + job["refund_wei"] == job["escrow_wei"]
    assert balances["consumer"] == (
        1000 * one
        - by_class["storage"]["paid_wei"]
        - by_class["compute"]["paid_wei"]
        - node["paid_wei"]
        - job["paid_wei"]
    )
    assert balances["provider 3"] == 300 * one + node["paid_wei"] + job["paid_wei"]
    assert balances["provider 1"] == 300 * one + by_class["storage"]["paid_wei"]


def test_demo_prints_tables(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo"], env=_env(tmp_path))
    assert result.exit_code == 0, result.output
    assert "Leases" in result.stdout
    assert "conserved" in result.stdout
    assert "NOT conserved" not in result.stdout
