"""The storage commands on a devnet with provider nodes as separate processes: put, ls, get,
share and get by grant, audit, rm, and one-line errors with the right exit codes."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account

from nuclux.chain import ChainConnection, Deployment, Ledger
from nuclux.core.reference import index_object_id
from nuclux.errors import ObjectNotFound
from nuclux.keys.derive import from_private_key, parse_private_key_hex
from nuclux.sdk import StorageClient, StorageSettings
from tests.cli.test_devnet_cli import Cli

pytestmark = pytest.mark.anvil


class Net:
    def __init__(self, cli: Cli, tmp: Path, up: dict[str, Any]) -> None:
        self.cli, self.tmp, self.up = cli, tmp, up
        accounts = cli.json("devnet", "status")["accounts"]
        self.keys = {i: a["private_key"] for i, a in enumerate(accounts)}
        self.addresses = {i: a["address"] for i, a in enumerate(accounts)}

    def as_(self, who: int) -> dict[str, str]:
        return {"KEY": self.keys[who]}

    def run(self, who: int, *args: str) -> Any:
        return self.cli.run(*args, "--private-key-env", "KEY", env=self.as_(who))

    def json(self, who: int, *args: str) -> Any:
        return self.cli.json(*args, "--private-key-env", "KEY", env=self.as_(who))


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    tmp = tmp_path_factory.mktemp("storage-cli")
    cli = Cli(tmp)
    up = cli.json("devnet", "up", "--accounts", "2", "--nux", "10000", "--nodes", "4")
    try:
        yield Net(cli, tmp, up)
    finally:
        cli.json("devnet", "down")


async def _publish(rpc: str, deployment: Path, key: str) -> None:
    keys = from_private_key(parse_private_key_hex(key))
    conn = await ChainConnection.open(rpc)
    try:
        ledger = Ledger(conn, Deployment.load(deployment), Account.from_key(keys.eth_private_key))
        await ledger.publish_key(keys.x25519_public)
    finally:
        await conn.close()


def _files(tmp: Path) -> tuple[Path, Path]:
    big, small = tmp / "big.bin", tmp / "note.txt"
    big.write_bytes(os.urandom(3_000_000))
    small.write_bytes(b"a note")
    return big, small


def test_put_ls_get_share_audit_rm(net: Net, tmp_path: Path) -> None:
    big, small = _files(tmp_path)
    put = net.json(1, "put", str(big), "--days", "1")
    ref = put["reference"]
    assert ref.startswith("nux:")
    assert put["size"] == 3_000_000
    plain = net.run(1, "put", str(small), "--days", "1")
    assert plain.exit_code == 0, plain.output
    small_ref = plain.stdout.strip()
    assert small_ref.startswith("nux:")

    listed = {e["reference"]: e for e in net.json(1, "ls")}
    assert [e["name"] for e in net.json(1, "ls", "big.*", "--no-check")] == ["big.bin"]
    res = net.run(1, "ls", "*.mp4", "--no-check")
    assert res.exit_code == 0, res.output
    assert "no files match *.mp4" in res.output
    assert listed[ref]["name"] == "big.bin"
    assert listed[ref]["status"] == "healthy"
    assert (listed[ref]["healthy"], listed[ref]["total"], listed[ref]["needed"]) == (4, 4, 2)
    assert listed[small_ref]["status"] == "healthy"

    got = net.json(1, "get", ref, "-o", str(tmp_path / "out.bin"))
    assert got["corrupt"] == []
    assert (tmp_path / "out.bin").read_bytes() == big.read_bytes()

    stamp = net.json(1, "verify-timestamp", str(big), ref)
    assert stamp["manifest_version"] == 1
    assert stamp["block"] > 0
    res = net.run(1, "verify-timestamp", str(small), ref)
    assert res.exit_code == 6, res.output
    assert "is not the file" in res.output

    audit = net.json(1, "audit", ref)
    assert audit["ok"] is True
    assert [p["status"] for p in audit["providers"]] == ["ok"] * 4

    # share with account 2 (after it publishes its key); account 0 is a stranger
    deployment = net.tmp / "data" / "devnet" / "deployment.json"
    asyncio.run(_publish(net.up["rpc_url"], deployment, net.keys[2]))
    grant = net.json(1, "share", ref, "--to", net.addresses[2], "--days", "1")["grant"]
    assert grant.startswith("nuxgrant1")
    res = net.run(2, "get", grant, "-o", str(tmp_path))
    assert res.exit_code == 0, res.output
    assert (tmp_path / "big.bin").read_bytes() == big.read_bytes()
    stranger = net.run(0, "get", grant, "-o", str(tmp_path / "stolen"))
    assert stranger.exit_code == 8, stranger.output
    assert "ask the owner" in stranger.output
    tampered = grant[:40] + ("A" if grant[40] != "A" else "B") + grant[41:]
    res = net.run(2, "get", tampered, "-o", str(tmp_path / "stolen"))
    assert res.exit_code in (2, 6), res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "stolen").exists()

    removed = net.json(1, "rm", ref)
    assert removed["problems"] == []
    assert ref not in {e["reference"] for e in net.json(1, "ls", "--no-check")}
    res = net.run(1, "get", ref, "-o", str(tmp_path / "gone"))
    assert res.exit_code == 7, res.output  # ObjectNotFound: the manifest is gone


def test_errors_are_one_line_with_exit_codes(net: Net, tmp_path: Path) -> None:
    cases = [
        (("put", str(tmp_path / "missing")), 2, "no such file"),
        (("put", str(tmp_path), "--days", "1"), 2, "not a file"),
        (("get", "nux:abc"), 2, "malformed reference"),
        (("get", "hello"), 2, "neither a reference"),
        (("share", "nux:" + "a" * 64, "--to", net.addresses[2]), 2, "checksum"),
    ]
    (tmp_path / "f").write_bytes(os.urandom(10_000))
    cases.append((("put", str(tmp_path / "f"), "--n", "9", "--days", "1"), 1, "9 providers"))
    cases.append((("put", str(tmp_path / "f"), "--max-price", "lots"), 2, "--max-price"))
    for args, code, text in cases:
        res = net.run(1, *args)
        assert res.exit_code == code, (args, res.output)
        assert text in res.output, (args, res.output)
        assert "Traceback" not in res.output
        assert res.output.count("error:") == 1


async def _swap_index_pages(
    rpc: str, deployment: Path, key: str, pages: dict[int, bytes] | None
) -> dict[int, bytes]:
    """Replace page 0 of the account's file index on every lease holding it: with ``pages``
    (lease -> bytes) if given, else with the same page marked version 3 (a format this
    version cannot read); returns what each lease held before."""
    keys = from_private_key(parse_private_key_hex(key))
    before: dict[int, bytes] = {}
    async with await ChainConnection.open(rpc) as conn:
        acct = Account.from_key(keys.eth_private_key)
        ledger = Ledger(conn, Deployment.load(deployment), acct)
        client = StorageClient(ledger, keys, StorageSettings(use_market=False))
        try:
            for lease in await client.ctx.leases.mine():
                _, node = await client.ctx.peers.client_for_lease(lease.id)
                try:
                    before[lease.id] = await node.get(lease.id, index_object_id(0))
                except ObjectNotFound:
                    continue
                new = bytes([3]) + before[lease.id][1:] if pages is None else pages[lease.id]
                await node.put(lease.id, index_object_id(0), new)
        finally:
            await client.close()
    return before


def test_a_put_whose_index_cannot_be_updated_still_names_the_file(net: Net, tmp_path: Path) -> None:
    first, second = tmp_path / "first.txt", tmp_path / "second.bin"
    first.write_bytes(b"the first file")
    second.write_bytes(os.urandom(50_000))
    assert net.run(0, "put", str(first), "--days", "1").exit_code == 0
    deployment = net.tmp / "data" / "devnet" / "deployment.json"
    rpc = net.up["rpc_url"]
    held = asyncio.run(_swap_index_pages(rpc, deployment, net.keys[0], None))
    assert held  # the index was written
    try:
        res = net.run(0, "put", str(second), "--days", "1")
        assert res.exit_code != 0, res.output
        assert "no copy opens" in res.output
        assert "upgrade" in res.output
        line = next(x for x in res.output.splitlines() if x.startswith("stored as nux:"))
        ref = line.split()[2].rstrip(",")
        got = net.run(0, "get", ref, "-o", str(tmp_path / "back.bin"))
        assert got.exit_code == 0, got.output
        assert (tmp_path / "back.bin").read_bytes() == second.read_bytes()
    finally:
        asyncio.run(_swap_index_pages(rpc, deployment, net.keys[0], held))
    names = {e["name"] for e in net.json(0, "ls", "--no-check")}
    assert names == {"first.txt"}  # the index the failed put left alone


def test_put_of_several_files_in_one_command(net: Net, tmp_path: Path) -> None:
    files = []
    for i in range(4):
        f = tmp_path / f"photo{i}.jpg"
        f.write_bytes(os.urandom(2000 + 70_000 * (i % 2)))  # packed and coded files
        files.append(f)
    # bad input first: nothing is stored
    res = net.run(2, "put", str(files[0]), str(tmp_path / "missing.jpg"), "--days", "1")
    assert res.exit_code == 2, res.output
    assert "missing.jpg: no such file" in res.output
    res = net.run(2, "put", str(files[0]), str(files[1]), "--name", "x", "--days", "1")
    assert res.exit_code == 2, res.output
    assert "--name names one file" in res.output
    assert net.json(2, "ls", "photo*", "--no-check") == []

    res = net.run(2, "put", *map(str, files[:2]), "--days", "1")
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert [line.split()[1] for line in lines] == [str(f) for f in files[:2]]
    refs = [line.split()[0] for line in lines]
    assert all(r.startswith("nux:") for r in refs)
    stored = net.json(2, "put", *map(str, files[2:]), "--days", "1")
    assert [r["name"] for r in stored] == ["photo2.jpg", "photo3.jpg"]
    refs += [r["reference"] for r in stored]
    listed = {e["reference"]: e["name"] for e in net.json(2, "ls", "photo*", "--no-check")}
    assert listed == {ref: f.name for ref, f in zip(refs, files, strict=True)}
    got = net.run(2, "get", refs[3], "-o", str(tmp_path / "back.jpg"))
    assert got.exit_code == 0, got.output
    assert (tmp_path / "back.jpg").read_bytes() == files[3].read_bytes()
    # several back at once, into a directory (and only into one)
    res = net.run(2, "get", *refs, "-o", str(tmp_path / "back.jpg"))
    assert res.exit_code == 2, res.output
    assert "into a directory" in res.output
    restore = tmp_path / "restore"
    restore.mkdir()
    got = net.json(2, "get", *refs, "-o", str(restore))
    assert [Path(g["path"]).name for g in got] == [f.name for f in files]
    for f in files:
        assert (restore / f.name).read_bytes() == f.read_bytes()
    # and removed together; a bad reference first changes nothing
    res = net.run(2, "rm", refs[0], "nux:notareference")
    assert res.exit_code == 2, res.output
    assert len(net.json(2, "ls", "photo*", "--no-check")) == 4
    res = net.run(2, "rm", *refs[:3])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines() == [f"removed {r}" for r in refs[:3]]
    assert [e["reference"] for e in net.json(2, "ls", "photo*", "--no-check")] == [refs[3]]
