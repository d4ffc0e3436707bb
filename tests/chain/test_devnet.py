"""The devnet lifecycle (up, status, down) and the anvil process plumbing around it."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nuclux.chain import DeployParams
from nuclux.chain.anvil import AnvilProcess, free_port, is_anvil
from nuclux.chain.devnet import (
    DEVNET_FILE,
    DevnetInfo,
    dev_account,
    devnet_down,
    devnet_status,
    devnet_up,
    find_anvil,
)
from nuclux.core.types import ONE_NUX
from nuclux.errors import ChainError, ChainUnavailable, UsageError

# anvil's published dev accounts for the "test ... junk" mnemonic.
ANVIL_0 = "0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266"
ANVIL_0_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ANVIL_1 = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
ANVIL_9 = "0xa0Ee7A142d267C1f36714E4a8F75612F20a79720"


def _proc_exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


@pytest.fixture
def anvil_binary() -> Path:
    return find_anvil()  # scripts/bootstrap installs it; a missing anvil is a failure


def test_dev_accounts_are_anvils() -> None:
    assert dev_account(0).address == ANVIL_0
    assert "0x" + dev_account(0).key.hex() == ANVIL_0_KEY
    assert dev_account(1).address == ANVIL_1
    assert dev_account(9).address == ANVIL_9
    with pytest.raises(UsageError):
        dev_account(10)


def test_find_anvil_explains_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NUCLUX_ANVIL", raising=False)
    with pytest.raises(ChainUnavailable, match="npm install"):
        find_anvil(tmp_path)
    monkeypatch.setenv("NUCLUX_ANVIL", str(tmp_path / "missing"))
    with pytest.raises(ChainUnavailable, match="NUCLUX_ANVIL"):
        find_anvil()


@pytest.mark.anvil
async def test_start_failures_are_clear_and_leave_nothing_running(
    tmp_path: Path, anvil_binary: Path
) -> None:
    bad = AnvilProcess(tmp_path, binary=anvil_binary, extra_args=["--no-such-flag"])
    with pytest.raises(ChainUnavailable, match="no-such-flag"):
        await bad.start(timeout=10)
    assert not bad.running
    async with AnvilProcess(tmp_path / "a", binary=anvil_binary) as node:
        taken = AnvilProcess(tmp_path / "b", node.port, binary=anvil_binary)
        with pytest.raises(ChainUnavailable, match="in use"):
            await taken.start(timeout=10)
        assert not taken.running
        assert is_anvil(node.pid, node.port)
    assert not node.running
    assert not is_anvil(node.pid, node.port)


@pytest.mark.anvil
async def test_devnet_up_status_down(tmp_path: Path, anvil_binary: Path) -> None:
    state = tmp_path / "state"
    nux_each = 1_000 * ONE_NUX
    params = DeployParams()
    first, second = await asyncio.gather(
        devnet_up(state, params=params, funded=3, nux_each=nux_each, binary=anvil_binary),
        devnet_up(state, binary=anvil_binary),
        return_exceptions=True,
    )
    assert isinstance(second, ChainError)
    assert "already starting" in str(second)
    assert isinstance(first, DevnetInfo)
    info = first
    try:
        assert is_anvil(info.pid, info.port)
        assert os.getsid(info.pid) == info.pid  # detached: its own session
        record = json.loads((state / DEVNET_FILE).read_text())
        assert record["pid"] == info.pid
        assert record["rpc_url"] == info.rpc_url
        assert (state / "deployment.json").exists()
        json.dumps(info.to_json())

        status = await devnet_status(state)
        assert status.running, status.detail
        assert (status.pid, status.rpc_url, status.chain_id) == (info.pid, info.rpc_url, 31337)
        assert status.block_number is not None
        assert status.block_number > 0
        assert status.addresses == info.addresses
        assert set(status.addresses) >= {"NuxCoin", "LeaseManager", "ProviderRegistry"}
        assert [a.index for a in status.accounts] == [0, 1, 2, 3]
        assert status.accounts[0].nux == params.supply - 3 * nux_each
        assert all(a.nux == nux_each for a in status.accounts[1:])
        assert all(a.eth is not None and a.eth > 10**23 for a in status.accounts)
        assert status.accounts[0].private_key == ANVIL_0_KEY
        assert json.loads(json.dumps(status.to_json()))["running"] is True

        with pytest.raises(ChainError, match="already running"):
            await devnet_up(state, binary=anvil_binary)
    finally:
        down = await devnet_down(state)
    assert down.stopped
    assert down.pid == info.pid
    assert not _proc_exists(info.pid)  # gone and reaped
    assert not (state / DEVNET_FILE).exists()
    after = await devnet_status(state)
    assert not after.running
    assert "no devnet" in after.detail
    again = await devnet_down(state)
    assert not again.stopped
    assert "nothing to stop" in again.message


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    yield proc
    proc.kill()
    proc.wait(timeout=10)


async def test_stale_record_is_never_signalled(
    tmp_path: Path, sleeper: subprocess.Popen[bytes]
) -> None:
    # A recorded PID that is alive but not anvil (a PID reused by another program).
    port = free_port()
    record = {"pid": sleeper.pid, "port": port, "rpc_url": f"http://127.0.0.1:{port}"}
    (tmp_path / DEVNET_FILE).write_text(json.dumps(record))
    status = await devnet_status(tmp_path)
    assert not status.running
    assert "not running" in status.detail
    assert len(status.accounts) == 1
    assert status.accounts[0].eth is None
    down = await devnet_down(tmp_path)
    assert not down.stopped
    assert "already exited" in down.message
    assert sleeper.poll() is None  # untouched
    assert not (tmp_path / DEVNET_FILE).exists()


async def test_unreadable_record_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / DEVNET_FILE).write_text("{not json")
    with pytest.raises(ChainError, match="unreadable devnet record"):
        await devnet_status(tmp_path)
