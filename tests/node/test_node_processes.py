"""Three `nuclux node run` processes against anvil from `nuclux devnet up`: registration by
owner keys, leases accepted by the nodes' agents, storage over TLS pinned by on-chain
fingerprints (another certificate is refused), read capabilities, kill -9 during a write and
a restart, and a graceful SIGTERM that lets an upload in flight finish."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from eth_account import Account

from nuclux.chain import ChainConnection, Deployment, Ledger
from nuclux.core.capability import capability_to_header, issue_capability
from nuclux.core.lease import LeaseState
from nuclux.core.types import ONE_NUX, ResourceClass
from nuclux.errors import Forbidden, ObjectNotFound, PeerIdentityMismatch, ProviderUnavailable
from nuclux.net.client import NodeClient
from tests.cli.test_devnet_cli import Cli

pytestmark = pytest.mark.anvil

NUCLUX = [sys.executable, "-m", "nuclux"]
SECRETS = {"NUCLUX_PASSPHRASE": "node-pass", "NUCLUX_SCRYPT_N": "16"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    def __init__(self, cli: Cli, data_dir: Path, log: Path) -> None:
        self.cli, self.data_dir, self.log = cli, data_dir, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {**os.environ, **self.cli.env, **SECRETS}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*NUCLUX, "node", "run", "--data-dir", str(self.data_dir), "--poll", "0.2"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if b"serving https://" in self.log.read_bytes():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"node did not start:\n{self.log.read_text()[-3000:]}")

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.log.write_bytes(b"")

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            return -9


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("nodes")
    cli = Cli(tmp)
    up = cli.json("devnet", "up", "--accounts", "5", "--nux", "1000", "--epoch-length", "5")
    nodes: list[Node] = []
    try:
        for i in (1, 2, 3):
            acct = up["accounts"][i]
            port = free_port()
            d = tmp / f"node{i}"
            made = cli.json(
                "node",
                "init",
                "--data-dir",
                str(d),
                "--endpoint",
                f"https://127.0.0.1:{port}",
                "--owner",
                acct["address"],
                "--storage",
                "4GiB",
                "--stake",
                "100",
                *(["--price-egress", "auto"] if i == 3 else []),  # egress not offered
                env=SECRETS,
            )
            cli.json("devnet", "fund", made["operator"], "--eth", "5")
            reg = cli.json(
                "node",
                "register",
                "--data-dir",
                str(d),
                "--private-key-env",
                "K",
                env={"K": acct["private_key"], **SECRETS},
            )
            assert reg["status"] == "active"
            node = Node(cli, d, tmp / f"node{i}.log")
            node.start()
            nodes.append(node)
        yield {"cli": cli, "up": up, "nodes": nodes, "tmp": tmp}
    finally:
        codes = [n.stop() for n in nodes]
        cli.json("devnet", "down")
    assert codes == [0, 0, 0]  # graceful shutdown on SIGTERM


async def _open(
    up: dict[str, Any],
    tmp: Path,
    consumer_index: int,
) -> tuple[ChainConnection, Ledger]:
    dep = Deployment.load(tmp / "data" / "devnet" / "deployment.json")
    conn = await ChainConnection.open(up["rpc_url"])
    acct = Account.from_key(up["accounts"][consumer_index]["private_key"])
    return conn, Ledger(conn, dep, acct)


async def _active_lease(ledger: Ledger, provider: str) -> int:
    lid = await ledger.open_lease(provider, ResourceClass.STORAGE, 1, 50, 10**16, ONE_NUX)
    for _ in range(200):
        if (await ledger.lease(lid)).state is LeaseState.ACTIVE:
            return lid
        await asyncio.sleep(0.1)
    raise AssertionError(f"lease {lid} was not accepted by the node")


async def _refused(request: Awaitable[object]) -> bool:
    try:
        await request
    except Forbidden:
        return True
    return False


async def _receiving(node: Node) -> None:
    """Wait until ``node`` is writing an upload: a temp file in its store with data in it."""
    tmp = node.data_dir / "store" / "tmp"
    for _ in range(400):
        if any(f.stat().st_size > 0 for f in tmp.glob("w-*")):
            return
        await asyncio.sleep(0.025)
    raise AssertionError("the node never started writing the upload")


async def test_three_node_processes_serve_pinned_storage(network: dict[str, Any]) -> None:
    up, tmp = network["up"], network["tmp"]
    conn, consumer = await _open(up, tmp, 4)
    try:
        key = bytes(consumer.account.key)
        for i in (1, 2, 3):
            owner = up["accounts"][i]["address"]
            info = await consumer.provider(owner)  # endpoint and fingerprint from the chain
            lid = await _active_lease(consumer, owner)
            async with NodeClient(info.endpoint, info.cert_fingerprint, key) as c:
                await c.put(lid, b"hello", f"node {i}".encode())
                assert await c.get(lid, b"hello") == f"node {i}".encode()
            stranger = bytes(Account.from_key(up["accounts"][0]["private_key"]).key)
            async with NodeClient(info.endpoint, info.cert_fingerprint, stranger) as s:
                with pytest.raises(Forbidden):
                    await s.get(lid, b"hello")
    finally:
        await conn.close()


async def test_kill_9_during_a_write_then_restart(network: dict[str, Any]) -> None:
    up, tmp, node = network["up"], network["tmp"], network["nodes"][0]
    conn, consumer = await _open(up, tmp, 5)
    try:
        key = bytes(consumer.account.key)
        owner = up["accounts"][1]["address"]
        info = await consumer.provider(owner)
        lid = await _active_lease(consumer, owner)
        async with NodeClient(info.endpoint, info.cert_fingerprint, key) as c:
            await c.put(lid, b"kept", b"committed before the crash")
            big = os.urandom(48 << 20)
            upload = asyncio.create_task(c.put(lid, b"torn", big))
            await _receiving(node)
            node.kill9()
            with pytest.raises((aiohttp.ClientError, ObjectNotFound, OSError)):
                await upload
        node.start()
        async with NodeClient(info.endpoint, info.cert_fingerprint, key) as c:
            assert await c.get(lid, b"kept") == b"committed before the crash"
            try:
                got = await c.get(lid, b"torn")
            except ObjectNotFound:
                got = None
            assert got in (None, big)  # old state or new, never a torn object
            usage = await c.usage(lid)
            assert usage["used_bytes"] == len(b"committed before the crash") + (
                len(big) if got else 0
            )
    finally:
        await conn.close()


def _check_drained(cli: Cli, up: dict[str, Any], tmp: Path, drained: dict[str, Any]) -> None:
    assert drained["status"] == "paused"

    async def try_open() -> None:
        conn, consumer = await _open(up, tmp, 4)
        try:
            await consumer.open_lease(
                up["accounts"][3]["address"], ResourceClass.STORAGE, 1, 5, 10**16, ONE_NUX
            )
        finally:
            await conn.close()

    with pytest.raises(ProviderUnavailable, match="paused"):
        asyncio.run(try_open())


def test_status_and_drain_by_command(network: dict[str, Any]) -> None:
    cli, up, tmp = network["cli"], network["up"], network["tmp"]
    d = str(tmp / "node3")
    status = cli.json("node", "status", "--data-dir", d, env=SECRETS)
    assert status["registered"] is True
    assert status["registered_fingerprint_matches"] is True
    assert status["running"]["provider"] == up["accounts"][3]["address"]
    assert status["running"]["storage"]["offered_bytes"] == 4 << 30
    # the prices posted, and where they come from: egress follows the market, which has no
    # reference price for it (nor does this node offer any egress)
    assert status["prices"]["storage"]["source"] == "config"
    assert status["prices"]["storage"]["price"] > 0
    assert status["prices"]["bandwidth"] == {
        "price": 0,
        "source": "unset",
        "reference": None,
        "floor": None,
    }
    drained = cli.json("node", "drain", "--data-dir", d, env=SECRETS)
    try:
        _check_drained(cli, up, tmp, drained)
    finally:  # later tests use this provider: never leave it paused
        resumed = cli.run("node", "resume", "--data-dir", d, env=SECRETS)
    assert resumed.exit_code == 0, resumed.output

    res = cli.run(
        "node",
        "init",
        "--data-dir",
        d,
        "--endpoint",
        "https://127.0.0.1:1",
        "--owner",
        up["accounts"][3]["address"],
        "--storage",
        "1GiB",
        env=SECRETS,
    )
    assert res.exit_code == 2  # never overwrites an existing node
    res = cli.run(
        "node",
        "init",
        "--data-dir",
        str(tmp / "bad"),
        "--endpoint",
        "http://x:1",
        "--owner",
        up["accounts"][3]["address"],
        env=SECRETS,
    )
    assert res.exit_code == 2


async def test_sigterm_during_a_write_finishes_or_rolls_it_back(network: dict[str, Any]) -> None:
    up, tmp, node = network["up"], network["tmp"], network["nodes"][1]
    conn, consumer = await _open(up, tmp, 5)
    try:
        key = bytes(consumer.account.key)
        owner = up["accounts"][2]["address"]
        info = await consumer.provider(owner)
        lid = await _active_lease(consumer, owner)
        big = os.urandom(48 << 20)
        async with NodeClient(info.endpoint, info.cert_fingerprint, key) as c:
            upload = asyncio.create_task(c.put(lid, b"in-flight", big))
            await _receiving(node)  # the node holds part of the upload in a temp file
            assert node.proc is not None
            node.proc.send_signal(signal.SIGTERM)
            stored = await asyncio.wait_for(upload, 40)  # the upload in flight completes
            code = await asyncio.to_thread(node.proc.wait, 40)
        assert code == 0  # a clean exit, not a crash
        assert stored.size == len(big)
        node.log.write_bytes(b"")
        node.start()
        async with NodeClient(info.endpoint, info.cert_fingerprint, key) as c:
            assert await c.get(lid, b"in-flight") == big  # acknowledged, so there in full
    finally:
        await conn.close()


async def test_a_certificate_other_than_the_registered_one_is_refused(
    network: dict[str, Any],
) -> None:
    """A client pins each node by the fingerprint its owner registered on chain: a process
    answering at an endpoint with any other certificate is refused before a request is sent."""
    up, tmp = network["up"], network["tmp"]
    conn, consumer = await _open(up, tmp, 4)
    try:
        key = bytes(consumer.account.key)
        one = await consumer.provider(up["accounts"][1]["address"])
        two = await consumer.provider(up["accounts"][2]["address"])
        assert one.cert_fingerprint != two.cert_fingerprint
        async with NodeClient(two.endpoint, one.cert_fingerprint, key) as c:
            with pytest.raises(PeerIdentityMismatch):
                await c.info()
        async with NodeClient(two.endpoint, two.cert_fingerprint, key) as c:
            assert (await c.info())["provider"] == up["accounts"][2]["address"]
    finally:
        await conn.close()


async def test_a_read_capability_across_processes(network: dict[str, Any]) -> None:
    """The owner's capability lets another address read the objects it names, nothing else,
    until it expires by chain time. (Last in the module: it moves anvil's clock.)"""
    up, tmp = network["up"], network["tmp"]
    conn, consumer = await _open(up, tmp, 4)
    try:
        key = bytes(consumer.account.key)
        owner = up["accounts"][3]["address"]
        info = await consumer.provider(owner)
        lid = await _active_lease(consumer, owner)
        async with NodeClient(info.endpoint, info.cert_fingerprint, key) as c:
            await c.put(lid, b"shared", b"for the grantee")
            await c.put(lid, b"private", b"for the owner")
        grantee = Account.from_key(up["accounts"][0]["private_key"])
        expires = await conn.now() + 60
        cap = capability_to_header(
            issue_capability(
                key,
                lease_id=lid,
                grantee=grantee.address,
                expires_at=expires,
                nonce=os.urandom(16),
                objects=[b"shared"],
            )
        )
        async with NodeClient(info.endpoint, info.cert_fingerprint, bytes(grantee.key)) as g:
            assert await g.get(lid, b"shared", capability=cap) == b"for the grantee"
            with pytest.raises(Forbidden):
                await g.get(lid, b"private", capability=cap)  # not named
            with pytest.raises(Forbidden):
                await g.get(lid, b"shared")  # no capability
            with pytest.raises(Forbidden):
                await g.put(lid, b"shared", b"overwritten")  # read only
            await conn.advance_time(61)
            for _ in range(100):  # the node follows the chain: the capability is now expired
                if await _refused(g.get(lid, b"shared", capability=cap)):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the expired capability was still accepted")
            with pytest.raises(Forbidden, match="expired"):
                await g.get(lid, b"shared", capability=cap)
    finally:
        await conn.close()
