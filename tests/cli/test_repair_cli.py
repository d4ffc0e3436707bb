"""``nuclux repair`` on a devnet with provider nodes as separate processes (anvil): a file put
at 2-of-3 on four nodes, one of its providers killed with SIGKILL, ``repair REF`` rebuilds the
lost share on the fourth, ``get`` returns the same bytes, ``repair --all`` has nothing to do;
``repair --all --watch`` as its own process runs rounds until SIGINT and exits 0; the
argument errors are one line with exit code 2."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_devnet_cli import Cli

pytestmark = pytest.mark.anvil


class Net:
    def __init__(self, cli: Cli, up: dict[str, Any]) -> None:
        self.cli, self.up = cli, up
        account = cli.json("devnet", "status")["accounts"][1]
        self.env = {"KEY": account["private_key"]}

    def run(self, *args: str) -> Any:
        return self.cli.run(*args, "--private-key-env", "KEY", env=self.env)

    def json(self, *args: str) -> Any:
        return self.cli.json(*args, "--private-key-env", "KEY", env=self.env)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    cli = Cli(tmp_path_factory.mktemp("repair-cli"))
    up = cli.json("devnet", "up", "--accounts", "1", "--nux", "10000", "--nodes", "4")
    try:
        yield Net(cli, up)
    finally:
        cli.json("devnet", "down")


def _kill(pid: int) -> None:
    """SIGKILL a node process this test session started, and collect its exit status."""
    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def test_repair_after_killing_n_minus_k_providers(net: Net, tmp_path: Path) -> None:
    data = os.urandom(3_000_000)
    (tmp_path / "f.bin").write_bytes(data)
    ref = net.json("put", str(tmp_path / "f.bin"), "--k", "2", "--n", "3", "--days", "1")[
        "reference"
    ]
    holders = [p["provider"].lower() for p in net.json("audit", ref)["providers"]]
    assert len(holders) == 3
    pids = {n["owner"].lower(): n["pid"] for n in net.up["nodes"]}
    victim = holders[2]  # n - k = 1 provider
    _kill(pids[victim])

    report = net.json("repair", ref)
    assert report["ok"] is True
    assert report["new_version"] == 2
    assert [b["share"] for b in report["bad"]] == [2]
    assert "unreachable" in report["bad"][0]["reasons"][0]
    (moved,) = report["moved"]
    assert moved["from_provider"].lower() == victim
    assert moved["provider"].lower() not in holders
    assert moved["committed"] is True

    got = net.json("get", ref, "-o", str(tmp_path / "out.bin"))
    assert got["manifest_version"] == 2
    assert (tmp_path / "out.bin").read_bytes() == data

    again = net.json("repair", "--all")
    assert [(f["reference"], f["nothing_to_do"]) for f in again] == [(ref, True)]
    text = net.run("repair", ref)
    assert text.exit_code == 0, text.output
    assert "nothing to do (3/3 shares healthy)" in text.stdout


def test_argument_errors(net: Net) -> None:
    cases = [
        ((), "give a file reference"),
        (("--all", "nux:" + "a" * 64), "not both"),
        (("hello",), "not a file reference"),
        (("nux:abc",), "malformed reference"),
    ]
    for args, text in cases:
        res = net.run("repair", *args)
        assert res.exit_code == 2, (args, res.output)
        assert text in res.output, (args, res.output)
        assert res.output.count("error:") == 1
        assert "Traceback" not in res.output


def test_watch_runs_rounds_until_interrupted(net: Net, tmp_path: Path) -> None:
    (tmp_path / "note").write_bytes(b"a note to watch")
    net.json("put", str(tmp_path / "note"), "--days", "1")
    env = {**os.environ, **net.cli.env, **net.env, "PYTHONUNBUFFERED": "1"}
    args = ["repair", "--all", "--watch", "--interval", "0.2", "--private-key-env", "KEY"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nuclux", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        while "round 2:" not in seen:
            line = proc.stdout.readline()
            assert line, f"the watch ended by itself: {''.join(seen)}"
            seen.append(line.strip())
        proc.send_signal(signal.SIGINT)  # Ctrl-C: the round in progress ends, then the command
        rest, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "\n".join(seen) + rest
    assert "round 1:" in seen
    assert any("nothing to do" in line for line in seen)
    assert "Traceback" not in rest
