"""``nuclux repair`` on a devnet with provider nodes as separate processes (anvil): a file put
at 2-of-3 on four nodes, one of its providers killed with SIGKILL, ``repair REF`` rebuilds the
lost share on the fourth, ``get`` returns the same bytes, ``repair --all`` has nothing to do;
a share the chain marks suspect (a demanded proof missed while its node was stopped) moves;
``repair --all --watch`` as its own process runs rounds until SIGINT and exits 0; the
argument errors are one line with exit code 2."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from nuclux.chain import ChainConnection, Deployment, Ledger
from nuclux.chain.revision import Revision, SignedRevision
from nuclux.core.reference import parse_reference
from nuclux.keys.derive import from_private_key, parse_private_key_hex
from nuclux.sdk import StorageClient
from nuclux.sdk.reading import open_file
from tests.cli.test_devnet_cli import Cli

pytestmark = pytest.mark.anvil


class Net:
    def __init__(self, cli: Cli, tmp: Path, up: dict[str, Any]) -> None:
        self.cli, self.cli_dir, self.up = cli, tmp, up
        accounts = cli.json("devnet", "status")["accounts"]
        self.env = {"KEY": accounts[1]["private_key"]}
        self.other = {"KEY": accounts[2]["private_key"]}  # the suspect-share test's account
        self.pids = {n["owner"].lower(): n["pid"] for n in up["nodes"]}

    def run(self, *args: str, env: dict[str, str] | None = None) -> Any:
        return self.cli.run(*args, "--private-key-env", "KEY", env=env or self.env)

    def json(self, *args: str, env: dict[str, str] | None = None) -> Any:
        return self.cli.json(*args, "--private-key-env", "KEY", env=env or self.env)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    tmp = tmp_path_factory.mktemp("repair-cli")
    cli = Cli(tmp)
    up = cli.json("devnet", "up", "--accounts", "2", "--nux", "10000", "--nodes", "4")
    try:
        yield Net(cli, tmp, up)
    finally:
        cli.json("devnet", "down")


def _kill(pid: int) -> None:
    """SIGKILL a node process this test session started, and collect its exit status."""
    os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


async def _make_suspect(net: Net, ref: str, provider: str) -> None:
    """Put the provider's co-signed revision on chain, demand a proof of the file's share
    while its node is stopped (SIGSTOP), let the demand lapse and report it: the storage
    module marks the share suspect. The node is resumed, still holding the share."""
    key = parse_private_key_hex(net.other["KEY"])
    deployment = Deployment.load(net.cli_dir / "data" / "devnet" / "deployment.json")
    conn = await ChainConnection.open(net.up["rpc_url"])
    try:
        ledger = Ledger(conn, deployment, Account.from_key(key))
        async with StorageClient(ledger, from_private_key(key)) as client:
            reference = parse_reference(ref)
            opened = await open_file(client.ctx, reference)
            assert opened.body.layout is not None
            lid = opened.body.layout.shares[0].lease_id
            _, node = await client.ctx.peers.client_for_lease(lid)
            latest = await node.latest_revision(lid)
        assert latest is not None
        rev = Revision(lid, latest.revision, latest.used_bytes, latest.share_count, latest.root)
        await ledger.submit_revision(
            SignedRevision(rev, latest.consumer_signature, latest.provider_signature)
        )
        position = latest.shares.index((reference.file_id, 0))
        pid = net.pids[provider.lower()]
        os.kill(pid, signal.SIGSTOP)
        try:
            await ledger.demand_proof(lid, position)
            await conn.advance_time(deployment.params.demand_window + 1)
            await ledger.report_missed_demand(lid)
        finally:
            os.kill(pid, signal.SIGCONT)
        assert await ledger.is_suspect(lid, latest.revision, position)
    finally:
        await conn.close()


def test_a_share_suspect_on_chain_is_moved(net: Net, tmp_path: Path) -> None:
    data = os.urandom(200_000)
    (tmp_path / "s.bin").write_bytes(data)
    args = ("put", str(tmp_path / "s.bin"), "--k", "2", "--n", "3", "--days", "1")
    ref = net.json(*args, env=net.other)["reference"]
    holder = net.json("audit", ref, env=net.other)["providers"][0]["provider"]
    asyncio.run(_make_suspect(net, ref, holder))
    report = net.json("repair", ref, env=net.other)
    assert [(b["share"], b["provider"]) for b in report["bad"]] == [(0, holder)]
    assert report["bad"][0]["reasons"][0].startswith("suspect on chain")
    (moved,) = report["moved"]
    assert moved["provider"] != holder
    assert report["problems"] == []  # the old share was dropped from the suspect lease
    net.json("get", ref, "-o", str(tmp_path / "out.bin"), env=net.other)
    assert (tmp_path / "out.bin").read_bytes() == data


def test_repair_after_killing_n_minus_k_providers(net: Net, tmp_path: Path) -> None:
    data = os.urandom(3_000_000)
    (tmp_path / "f.bin").write_bytes(data)
    ref = net.json("put", str(tmp_path / "f.bin"), "--k", "2", "--n", "3", "--days", "1")[
        "reference"
    ]
    holders = [p["provider"].lower() for p in net.json("audit", ref)["providers"]]
    assert len(holders) == 3
    victim = holders[2]  # n - k = 1 provider
    _kill(net.pids[victim])

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
