"""The local devnet: an anvil node with the contracts deployed and dev accounts funded.

Theory of operation. ``devnet_up`` starts anvil *detached* (its own session, output in
``anvil.log`` in the state dir) so it outlives the CLI process, deploys the contracts from dev
account 0, pays NuxCoin from it to accounts 1..funded (the faucet transfers, it never mints)
and records the node in ``devnet.json`` beside ``deployment.json``. Every later command runs in
a new process and finds the node through that record, trusting it only while the PID is alive,
is anvil on the recorded port (``/proc/PID/cmdline``) and the RPC answers: ``devnet_status``
reports, ``devnet_down`` signals only that PID and forgets the record, so a recycled PID is
never killed and a second ``up`` refuses while the first node runs. anvil keeps its chain in
memory, so every ``up`` is a fresh chain and redeploys.

The dev accounts are anvil's well-known ones (m/44'/60'/0'/0/i of the "test ... junk"
mnemonic), derived here without the node; their private keys are public knowledge and are
shown because they are fit only for a devnet.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.hdaccount import key_from_seed, seed_from_mnemonic
from eth_account.signers.local import LocalAccount

from nuclux.chain.anvil import (
    DEV_ACCOUNTS,
    RPC_ERRORS,
    START_TIMEOUT,
    AnvilProcess,
    find_anvil,
    is_anvil,
    reap_zombie,
    rpc_call,
    terminate,
)
from nuclux.chain.connection import ChainConnection
from nuclux.chain.deployment import Deployment, DeployParams, deploy
from nuclux.chain.ledger import Ledger
from nuclux.core.types import ONE_NUX
from nuclux.errors import ChainError, DeploymentNotFound, UsageError

__all__ = [
    "AnvilProcess",
    "DevAccount",
    "DevnetDown",
    "DevnetInfo",
    "DevnetStatus",
    "dev_account",
    "devnet_down",
    "devnet_status",
    "devnet_up",
    "find_anvil",
]

DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEFAULT_NUX_EACH = 100_000 * ONE_NUX
DEVNET_FILE = "devnet.json"
DEPLOYMENT_FILE = "deployment.json"


@functools.cache
def _dev_seed() -> bytes:
    return seed_from_mnemonic(DEV_MNEMONIC, "")


def dev_account(index: int) -> LocalAccount:
    """anvil's dev account ``index`` (m/44'/60'/0'/0/index of the well-known test mnemonic)."""
    if not 0 <= index < DEV_ACCOUNTS:
        raise UsageError(f"dev accounts are numbered 0..{DEV_ACCOUNTS - 1}")
    acct: LocalAccount = Account.from_key(key_from_seed(_dev_seed(), f"m/44'/60'/0'/0/{index}"))
    return acct


@dataclass(frozen=True, slots=True)
class DevAccount:
    """A dev account; balances in wei, None when the node is down. Index 0 is the deployer."""

    index: int
    address: str
    private_key: str
    eth: int | None = None
    nux: int | None = None


@dataclass(frozen=True, slots=True)
class DevnetInfo:
    """A devnet just started by ``devnet_up``."""

    state_dir: str
    pid: int
    rpc_url: str
    port: int
    chain_id: int
    log_path: str
    started: str
    funded: int
    addresses: dict[str, str] = field(default_factory=dict)
    accounts: tuple[DevAccount, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def record(self) -> dict[str, Any]:
        """What ``devnet.json`` holds: how to find the node again."""
        out = self.to_json()
        del out["addresses"], out["accounts"], out["state_dir"]
        return out


@dataclass(frozen=True, slots=True)
class DevnetStatus:
    """``running`` only if the recorded PID is anvil and its RPC answers; ``detail`` says why."""

    running: bool
    detail: str
    state_dir: str
    pid: int | None = None
    rpc_url: str | None = None
    chain_id: int | None = None
    block_number: int | None = None
    addresses: dict[str, str] = field(default_factory=dict)
    accounts: tuple[DevAccount, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class DevnetDown:
    """What ``devnet_down`` did: ``stopped`` is False when nothing was running."""

    stopped: bool
    pid: int | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _read_record(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / DEVNET_FILE
    try:
        raw = json.loads(path.read_text())
        return {**raw, "pid": int(raw["pid"]), "port": int(raw["port"])}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ChainError(f"unreadable devnet record {path} ({exc}); delete it by hand") from exc


@contextlib.contextmanager
def _exclusive(state_dir: Path) -> Iterator[None]:
    """One ``devnet up`` at a time per state dir; the lock dies with its process."""
    state_dir.mkdir(parents=True, exist_ok=True)
    with (state_dir / ".devnet.lock").open("w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ChainError(f"another `devnet up` is already starting in {state_dir}") from None
        yield


async def _accounts(
    conn: ChainConnection | None, deployment: Deployment | None, funded: int
) -> tuple[DevAccount, ...]:
    out = []
    for i in range(funded + 1):
        acct = dev_account(i)
        eth = nux = None
        if conn is not None:
            eth = await conn.eth_balance(acct.address)
            if deployment is not None and deployment.chain_id == conn.chain_id:
                nux = int(await Ledger(conn, deployment, acct).balance())
        out.append(DevAccount(i, acct.address, "0x" + acct.key.hex(), eth, nux))
    return tuple(out)


async def devnet_up(
    state_dir: Path,
    port: int | None = None,
    params: DeployParams | None = None,
    *,
    funded: int = 5,
    nux_each: int = DEFAULT_NUX_EACH,
    binary: Path | None = None,
    start_within: float = START_TIMEOUT,
    block_time: float | None = None,
) -> DevnetInfo:
    """Start a detached anvil, deploy, fund accounts 1..funded with NuxCoin, record it all.
    ``block_time`` (seconds) mines blocks at that interval instead of one per transaction."""
    if not 0 <= funded < DEV_ACCOUNTS:
        raise UsageError(f"funded must be 0..{DEV_ACCOUNTS - 1} (account 0 is the deployer)")
    params = params or DeployParams()
    if nux_each < 0 or nux_each * funded > params.supply:
        raise UsageError("the faucet cannot pay that much NuxCoin out of the supply")
    state_dir = Path(state_dir)
    with _exclusive(state_dir):
        record = _read_record(state_dir)
        if record is not None and is_anvil(record["pid"], record["port"]):
            raise ChainError(
                f"a devnet is already running from {state_dir} (pid {record['pid']}, "
                f"{record.get('rpc_url')}); run `nuclux devnet down` first"
            )
        if block_time is not None and not 0 < block_time <= 60:
            raise UsageError("block_time must be 0..60 seconds")
        extra = ("--block-time", f"{block_time:g}") if block_time is not None else ()
        anvil = AnvilProcess(
            state_dir, port, binary=binary or find_anvil(), detached=True, extra_args=extra
        )
        return await _bring_up(anvil, params, funded, nux_each, start_within)


async def _bring_up(
    anvil: AnvilProcess, params: DeployParams, funded: int, nux_each: int, start_within: float
) -> DevnetInfo:
    state_dir = anvil.state_dir
    await anvil.start(start_within)
    try:
        async with await ChainConnection.open(anvil.rpc_url) as conn:
            deployer = dev_account(0)
            deployment = await deploy(conn, deployer, params)
            faucet = Ledger(conn, deployment, deployer)
            if nux_each > 0:
                payees = [dev_account(i).address for i in range(1, funded + 1)]
                await asyncio.gather(*(faucet.transfer(a, nux_each) for a in payees))
            accounts = await _accounts(conn, deployment, funded)
        deployment.save(state_dir / DEPLOYMENT_FILE)
        info = DevnetInfo(
            state_dir=str(state_dir),
            pid=anvil.pid,
            rpc_url=anvil.rpc_url,
            port=anvil.port,
            chain_id=conn.chain_id,
            log_path=str(anvil.log_path),
            started=datetime.now(UTC).isoformat(timespec="seconds"),
            funded=funded,
            addresses=dict(deployment.addresses),
            accounts=accounts,
        )
        tmp = state_dir / f".{DEVNET_FILE}.tmp"
        tmp.write_text(json.dumps(info.record(), indent=2, sort_keys=True))
        tmp.replace(state_dir / DEVNET_FILE)
    except BaseException:
        await anvil.stop()
        raise
    return info


async def devnet_status(state_dir: Path) -> DevnetStatus:
    """What the devnet recorded in ``state_dir`` is doing; a dead node is a status, not an error."""
    state_dir = Path(state_dir)
    record = _read_record(state_dir)
    if record is None:
        return DevnetStatus(False, f"no devnet recorded in {state_dir}", str(state_dir))
    try:
        deployment: Deployment | None = Deployment.load(state_dir / DEPLOYMENT_FILE)
    except DeploymentNotFound:
        deployment = None
    pid, url, funded = record["pid"], str(record["rpc_url"]), int(record.get("funded", 0))
    addresses = dict(deployment.addresses) if deployment else {}
    down = functools.partial(
        DevnetStatus,
        False,
        state_dir=str(state_dir),
        pid=pid,
        rpc_url=url,
        addresses=addresses,
        accounts=await _accounts(None, None, funded),
    )
    if not is_anvil(pid, record["port"]):
        return down(f"anvil (pid {pid}) is not running; `nuclux devnet down` clears the record")
    try:
        await rpc_call(url, "eth_chainId")
        conn = await ChainConnection.open(url)
    except RPC_ERRORS as exc:
        why = str(exc) or type(exc).__name__
        return down(f"anvil (pid {pid}) is alive but its RPC at {url} does not answer: {why}")
    async with conn:
        return DevnetStatus(
            running=True,
            detail=f"anvil (pid {pid}) is serving {url}",
            state_dir=str(state_dir),
            pid=pid,
            rpc_url=url,
            chain_id=conn.chain_id,
            block_number=await conn.block_number(),
            addresses=addresses,
            accounts=await _accounts(conn, deployment, funded),
        )


async def devnet_down(state_dir: Path, grace: float = 10.0) -> DevnetDown:
    """Stop the recorded anvil (only if that PID is still anvil) and forget it; idempotent."""
    state_dir = Path(state_dir)
    record = _read_record(state_dir)
    if record is None:
        return DevnetDown(False, None, f"no devnet recorded in {state_dir}; nothing to stop")
    pid, port = record["pid"], record["port"]
    stopped = is_anvil(pid, port)
    if stopped:
        await terminate(pid, port, grace)
        message = f"stopped anvil (pid {pid}) at {record.get('rpc_url')}"
    else:
        reap_zombie(pid)  # in case this process started it and it died
        message = f"anvil (pid {pid}) had already exited; removed its record"
    (state_dir / DEVNET_FILE).unlink(missing_ok=True)
    return DevnetDown(stopped, pid, message)


async def devnet_fund(state_dir: Path, address: str, *, eth: int, nux: int) -> dict[str, Any]:
    """The devnet faucet: ether for gas from an unlocked account, NuxCoin from the deployer."""
    status = await devnet_status(state_dir)
    if not status.running or status.rpc_url is None:
        raise ChainError(f"no devnet is running ({status.detail}); run `nuclux devnet up`")
    deployment = Deployment.load(Path(state_dir) / "deployment.json")
    async with await ChainConnection.open(status.rpc_url, tx_timeout=30) as conn:
        ledger = Ledger(conn, deployment, dev_account(0))
        if eth > 0:
            await conn.fund_gas(address, eth)
        if nux > 0:
            await ledger.transfer(address, nux)
        return {
            "address": address,
            "eth_wei": await conn.eth_balance(address),
            "nux_wei": await ledger.balance(address),
        }
