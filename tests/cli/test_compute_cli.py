"""``nuclux run`` and ``nuclux jobs`` on a devnet with compute nodes as separate processes
(anvil, real TLS, real wasmtime workers): a job's stdout and outputs, inputs from files and
from Nuclux references, replicas, a failed job's exit status, --map over many files, never
overwriting outputs, the jobs listing, and bad arguments refused before any transaction."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import Result

from nuclux.core.compute_account import charge
from tests.cli.test_devnet_cli import Cli

pytestmark = pytest.mark.anvil

EXAMPLES = Path(__file__).parents[2] / "examples" / "jobs"
SHA256 = str(EXAMPLES / "sha256.wasm")
PI = str(EXAMPLES / "pi.wasm")
PRICE = 10**15  # the devnet nodes' compute price: wei per million fuel
FUEL = ["--fuel", "2e9"]


class Net:
    def __init__(self, cli: Cli) -> None:
        self.cli = cli
        accounts = cli.json("devnet", "status")["accounts"]
        self.keys = {i: a["private_key"] for i, a in enumerate(accounts)}
        self.addresses = {i: a["address"] for i, a in enumerate(accounts)}

    def run(self, who: int, *args: str) -> Result:
        """``nuclux ARGS`` as account ``who``; the key option goes before any ``--``."""
        head, sep, tail = _split(list(args))
        return self.cli.run(
            *head, "--private-key-env", "KEY", *sep, *tail, env={"KEY": self.keys[who]}
        )

    def json(self, who: int, *args: str) -> Any:
        head, sep, tail = _split(list(args))
        res = self.run(who, *head, "--json", *sep, *tail)
        assert res.exit_code == 0, res.output
        return json.loads(res.stdout)


def _split(args: list[str]) -> tuple[list[str], list[str], list[str]]:
    if "--" in args:
        i = args.index("--")
        return args[:i], ["--"], args[i + 1 :]
    return args, [], []


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    cli = Cli(tmp_path_factory.mktemp("compute-cli"))
    cli.json("devnet", "up", "--accounts", "3", "--nux", "10000", "--nodes", "3")
    try:
        yield Net(cli)
    finally:
        cli.json("devnet", "down")


def test_run_prints_stdout_and_writes_outputs(net: Net, tmp_path: Path) -> None:
    data = tmp_path / "words.txt"
    data.write_bytes(b"the quick brown fox\n" * 50)
    out_dir = tmp_path / "out"
    got = net.json(1, "run", SHA256, "--input", str(data), "--output-dir", str(out_dir), *FUEL)
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    assert got["ok"] is True
    assert digest in got["stdout"]
    assert digest in (out_dir / "sha256.txt").read_text()
    assert got["written"] == [str(out_dir / "sha256.txt")]
    assert len(got["providers"]) == 1
    assert int(got["cost_wei"]) == charge(got["fuel_used"], PRICE) > 0

    # plain text: the job's stdout exactly; an existing output is not overwritten
    plain = net.run(1, "run", PI, "--output-dir", str(out_dir), *FUEL, "--", "1000", "7")
    assert plain.exit_code == 0, plain.output
    assert plain.stdout.startswith("pi=3.")
    assert "samples=1000" in plain.stdout
    again = net.run(1, "run", SHA256, "-i", str(data), "-o", str(out_dir), *FUEL)
    assert again.exit_code == 0, again.output
    assert "use --force" in again.stderr
    assert len(list(out_dir.glob("sha256.txt.*"))) == 1
    forced = net.run(1, "run", SHA256, "-i", str(data), "-o", str(out_dir), "--force", *FUEL)
    assert forced.exit_code == 0, forced.output
    assert len(list(out_dir.glob("sha256.txt.*"))) == 1


def test_input_from_a_nuclux_reference_and_replicas(net: Net, tmp_path: Path) -> None:
    data = tmp_path / "stored.txt"
    data.write_bytes(b"stored on nuclux\n")
    ref = net.json(1, "put", str(data), "--days", "1")["reference"]
    got = net.json(
        1, "run", SHA256, "--input", ref, "--replicas", "3", "-o", str(tmp_path / "r"), *FUEL
    )
    assert hashlib.sha256(data.read_bytes()).hexdigest() in got["stdout"]
    assert "stored.txt" in got["stdout"]
    assert len(got["providers"]) == 3
    assert got["declined"] == []


def test_failed_job_exits_non_zero_with_its_message(net: Net, tmp_path: Path) -> None:
    res = net.run(1, "run", SHA256, "-o", str(tmp_path), *FUEL, "--", "/in/missing")
    assert res.exit_code == 9, res.output
    assert "error: job" in res.stderr
    assert "exit status" in res.stderr


def test_map_runs_one_job_per_file(net: Net, tmp_path: Path) -> None:
    src = tmp_path / "inputs"
    src.mkdir()
    for i in range(8):
        (src / f"part{i}.txt").write_bytes(f"part {i}\n".encode() * (i + 1))
    out_dir = tmp_path / "results"
    got = net.json(1, "run", "--map", str(src / "*.txt"), SHA256, "-o", str(out_dir), *FUEL)
    assert got["summary"]["jobs"] == 8
    assert got["summary"]["succeeded"] == 8
    for i in range(8):
        digest = hashlib.sha256((src / f"part{i}.txt").read_bytes()).hexdigest()
        assert digest in (out_dir / f"part{i}.txt" / "sha256.txt").read_text()
        assert digest in (out_dir / f"part{i}.txt" / "stdout").read_text()
    providers = {p for job in got["jobs"] for p in job["providers"]}
    assert len(providers) >= 2

    jobs = net.json(1, "jobs")
    assert len([j for j in jobs if j["state"] == "succeeded"]) >= 8
    assert all(j["cost_wei"] == charge(j["fuel_used"], PRICE) for j in jobs if j["replicas"] == 1)
    table = net.cli.run(
        "jobs", "--private-key-env", "KEY", env={"KEY": net.keys[1], "COLUMNS": "200"}
    )
    assert table.exit_code == 0
    assert "succeeded" in table.stdout
    assert jobs[-1]["id"][:16] in table.stdout


def test_bad_arguments_fail_before_any_transaction(net: Net, tmp_path: Path) -> None:
    before = net.cli.json("balance", net.addresses[2])
    text = tmp_path / "job.wat"
    text.write_text('(module (func (export "_start")))')
    cases = [
        (["run", str(tmp_path / "missing.wasm")], "no such module"),
        (["run", str(text)], "not a binary WebAssembly module"),
        (["run", SHA256, "--replicas", "0"], "--replicas"),
        (["run", SHA256, "--memory", "lots"], "--memory"),
        (["run", SHA256, "--timeout", "soon"], "--timeout"),
        (["run", SHA256, "--fuel", "1.5"], "--fuel"),
        (["run", SHA256, "--max-price", "cheap"], "--max-price"),
        (["run", SHA256, "--input", str(tmp_path / "nope.txt")], "no such file"),
        (["run", "--map", str(tmp_path / "none-*.txt"), SHA256], "matches no file"),
    ]
    for args, message in cases:
        res = net.run(2, *args)
        assert res.exit_code == 2, (args, res.output)
        assert "error:" in res.stderr
        assert message in res.stderr, (args, res.stderr)
    assert net.cli.json("balance", net.addresses[2]) == before
    assert net.json(2, "jobs") == []
