"""A local devnet: a real anvil node that Nuclux starts, finds again later, and stops.

Theory of operation. anvil ships as a native binary inside the npm package
``@foundry-rs/anvil``; ``find_anvil`` locates it (``$NUCLUX_ANVIL`` first, then ``node_modules``
searching upward from this package and from the working directory). The binary itself is
started, never the Node wrapper in ``node_modules/.bin``, so exactly one PID owns the node; it
listens on loopback only and always runs with ``--prune-history`` so it writes no state files.

``AnvilProcess`` is a node owned by the caller (tests use it as an async context manager): it
checks the port is free (or picks one), waits until JSON-RPC answers, and stops only its own PID
(SIGTERM, then SIGKILL). ``devnet_up`` starts one *detached* (own session, output in
``anvil.log``) so it outlives the CLI, deploys the contracts from dev account 0, pays NuxCoin
from it to accounts 1..funded (the faucet transfers, it never mints) and records the node in
``devnet.json`` beside ``deployment.json``. Later processes trust that record only while the
PID is alive, is anvil on the recorded port (``/proc/PID/cmdline``) and the RPC answers; so
``devnet_down`` never signals a recycled PID. The dev accounts are anvil's well-known ones (the
"test ... junk" mnemonic), derived here: their keys are public knowledge, fit only for a devnet.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import platform
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from eth_account import Account
from eth_account.hdaccount import key_from_seed, seed_from_mnemonic
from eth_account.signers.local import LocalAccount

from nuclux.chain.connection import ChainConnection
from nuclux.chain.deployment import Deployment, DeployParams, deploy
from nuclux.chain.ledger import Ledger
from nuclux.core.types import ONE_NUX
from nuclux.errors import ChainError, ChainUnavailable, DeploymentNotFound, UsageError

ANVIL_ENV = "NUCLUX_ANVIL"
DEV_MNEMONIC = "test test test test test test test test test test test junk"
DEV_CHAIN_ID = 31337
DEV_ACCOUNTS = 10
DEV_BALANCE_ETH = 1_000_000
DEFAULT_NUX_EACH = 100_000 * ONE_NUX
LOOPBACK = "127.0.0.1"
START_TIMEOUT = 20.0
DEVNET_FILE = "devnet.json"
DEPLOYMENT_FILE = "deployment.json"
LOG_FILE = "anvil.log"
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
_RPC_ERRORS = (ChainError, aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError, KeyError)
# Detached nodes this process started: kept so they are reaped here, not left as zombies.
_SPAWNED: dict[int, subprocess.Popen[bytes]] = {}


def find_anvil(root: Path | None = None) -> Path:
    """The anvil binary: ``$NUCLUX_ANVIL``, else node_modules above ``root`` (or here and CWD)."""
    env = os.environ.get(ANVIL_ENV)
    if env:
        if Path(env).is_file() and os.access(env, os.X_OK):
            return Path(env)
        raise ChainUnavailable(f"${ANVIL_ENV} is {env!r}, which is not an executable file")
    arch = _ARCH.get(platform.machine().lower())
    archs = [arch] if arch else ["amd64", "arm64"]
    starts = [root] if root is not None else [Path(__file__).parent, Path.cwd()]
    for start in starts:
        here = start.resolve()
        for d in (here, *here.parents):
            for a in archs:
                cand = d / "node_modules" / "@foundry-rs" / f"anvil-linux-{a}" / "bin" / "anvil"
                if cand.is_file() and os.access(cand, os.X_OK):
                    return cand
    raise ChainUnavailable(
        "anvil not found (node_modules/@foundry-rs/anvil-linux-*/bin/anvil): run `npm ci` in "
        f"the Nuclux project root, or set ${ANVIL_ENV} to an anvil binary"
    )


@functools.cache
def _dev_seed() -> bytes:
    return seed_from_mnemonic(DEV_MNEMONIC, "")


def dev_account(index: int) -> LocalAccount:
    """anvil's dev account ``index`` (m/44'/60'/0'/0/index of the well-known test mnemonic)."""
    if not 0 <= index < DEV_ACCOUNTS:
        raise UsageError(f"dev accounts are numbered 0..{DEV_ACCOUNTS - 1}")
    key = key_from_seed(_dev_seed(), f"m/44'/60'/0'/0/{index}")
    acct: LocalAccount = Account.from_key(key)
    return acct


def free_port(port: int = 0) -> int:
    """Bind ``port`` on loopback (0: any) and release it; ``ChainUnavailable`` if it is taken."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError as exc:
            raise ChainUnavailable(f"port {port} on {LOOPBACK} is in use: {exc}") from None
        return int(s.getsockname()[1])


async def rpc_call(url: str, method: str, params: list[Any] | None = None,
                   timeout: float = 2.0) -> Any:
    """One raw JSON-RPC call (used to probe a node without a web3 client)."""
    payload = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        async with session.post(url, json=payload) as resp:
            body = await resp.json(content_type=None)
    if "error" in body:
        raise ChainError(f"{method} failed: {body['error']}")
    return body["result"]


def is_anvil(pid: int, port: int) -> bool:
    """Whether ``pid`` is a live anvil listening on ``port`` (zombies have no cmdline)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    return "anvil" in Path(argv[0]).name and f"--port\0{port}\0" in "\0".join(argv) + "\0"


async def _wait_until(done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def _terminate(pid: int, gone: Callable[[], bool], timeout: float) -> None:
    """SIGTERM ``pid`` alone; SIGKILL it if it outlives ``timeout``."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        if gone():
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if await _wait_until(gone, wait):
            return
    raise ChainError(f"anvil (pid {pid}) did not exit after SIGKILL")


class AnvilProcess:
    """One anvil node on loopback, started and stopped by its owner."""

    def __init__(self, state_dir: Path, port: int | None = None, *, binary: Path | None = None,
                 detached: bool = False, extra_args: Sequence[str] = ()) -> None:
        self.state_dir = Path(state_dir)
        self.log_path = self.state_dir / LOG_FILE
        self.binary = binary
        self.detached = detached
        self.extra_args = tuple(extra_args)
        self.port = port or 0
        self._fixed_port = port is not None
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def rpc_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ChainError("anvil has not been started")
        return self.proc.pid

    def command(self, binary: Path) -> list[str]:
        return [str(binary), "--host", LOOPBACK, "--port", str(self.port), "--prune-history",
                "--chain-id", str(DEV_CHAIN_ID), "--accounts", str(DEV_ACCOUNTS),
                "--balance", str(DEV_BALANCE_ETH), "--quiet", *self.extra_args]

    async def start(self, timeout: float = START_TIMEOUT) -> AnvilProcess:
        """Start anvil and return once its JSON-RPC answers; ``ChainUnavailable`` otherwise."""
        if self.proc is not None:
            raise UsageError("this anvil is already started")
        binary = self.binary or find_anvil()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        for _attempt in range(3):
            self.port = free_port(self.port if self._fixed_port else 0)
            with self.log_path.open("wb") as log:
                self.proc = subprocess.Popen(
                    self.command(binary), stdin=subprocess.DEVNULL, stdout=log,
                    stderr=subprocess.STDOUT, cwd=self.state_dir, start_new_session=self.detached)
            try:
                exited = await self._wait_ready(deadline)
            except BaseException:
                await self.stop()
                raise
            if not exited:
                return self
            if self._fixed_port or "in use" not in self.log_tail():
                break  # a port race is the only failure worth retrying
        raise ChainUnavailable(f"anvil exited at start ({self.rpc_url}):\n{self.log_tail()}")

    async def _wait_ready(self, deadline: float) -> bool:
        """False once the RPC answers; True if anvil exited first."""
        assert self.proc is not None
        while self.proc.poll() is None:
            try:
                if int(await rpc_call(self.rpc_url, "eth_chainId", timeout=1.0), 16):
                    return False
            except _RPC_ERRORS:
                pass
            if time.monotonic() > deadline:
                raise ChainUnavailable(
                    f"anvil did not answer on {self.rpc_url} in time; log tail:\n{self.log_tail()}")
            await asyncio.sleep(0.05)
        return True

    def log_tail(self, limit: int = 2000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return "(no log)"
        return data[-limit:].decode(errors="replace").strip() or "(empty log)"

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop this PID only (SIGTERM, then SIGKILL); a no-op if it is not running."""
        proc = self.proc
        if proc is not None:
            await _terminate(proc.pid, lambda: proc.poll() is not None, timeout)

    async def __aenter__(self) -> AnvilProcess:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


@dataclass(frozen=True, slots=True)
class DevAccount:
    """A dev account; ``eth`` and ``nux`` are balances in wei (None when the node is down)."""

    index: int
    address: str
    private_key: str
    eth: int | None = None
    nux: int | None = None


@dataclass(frozen=True, slots=True)
class DevnetInfo:
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
        del out["addresses"], out["accounts"]
        return out


@dataclass(frozen=True, slots=True)
class DevnetStatus:
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
    stopped: bool
    pid: int | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _read_record(state_dir: Path) -> dict[str, Any] | None:
    try:
        raw = json.loads((state_dir / DEVNET_FILE).read_text())
        return {**raw, "pid": int(raw["pid"]), "port": int(raw["port"])}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ChainError(f"unreadable devnet record {state_dir / DEVNET_FILE}: {exc}") from exc


async def _accounts(conn: ChainConnection | None, deployment: Deployment | None,
                    funded: int) -> tuple[DevAccount, ...]:
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


async def devnet_up(state_dir: Path, port: int | None = None,
                    params: DeployParams = DeployParams(), *, funded: int = 5,
                    nux_each: int = DEFAULT_NUX_EACH, binary: Path | None = None,
                    timeout: float = START_TIMEOUT) -> DevnetInfo:
    """Start a detached anvil, deploy, fund accounts 1..funded with NuxCoin, record it all."""
    if not 0 <= funded < DEV_ACCOUNTS:
        raise UsageError(f"funded must be 0..{DEV_ACCOUNTS - 1} (account 0 is the deployer)")
    if nux_each < 0 or nux_each * funded > params.supply:
        raise UsageError("the faucet cannot pay that much NuxCoin out of the supply")
    state_dir = Path(state_dir)
    record = _read_record(state_dir)
    if record is not None and is_anvil(record["pid"], record["port"]):
        raise ChainError(f"a devnet is already running from {state_dir} (pid {record['pid']}, "
                         f"{record.get('rpc_url')}); run `nuclux devnet down` first")
    anvil = AnvilProcess(state_dir, port, binary=binary, detached=True)
    await anvil.start(timeout)
    try:
        async with await ChainConnection.open(anvil.rpc_url) as conn:
            deployer = dev_account(0)
            deployment = await deploy(conn, deployer, params)
            faucet = Ledger(conn, deployment, deployer)
            if nux_each > 0:
                await asyncio.gather(*(faucet.transfer(dev_account(i).address, nux_each)
                                       for i in range(1, funded + 1)))
            accounts = await _accounts(conn, deployment, funded)
        deployment.save(state_dir / DEPLOYMENT_FILE)
        info = DevnetInfo(str(state_dir), anvil.pid, anvil.rpc_url, anvil.port, conn.chain_id,
                          str(anvil.log_path), datetime.now(UTC).isoformat(timespec="seconds"),
                          funded, dict(deployment.addresses), accounts)
        tmp = state_dir / f".{DEVNET_FILE}.tmp"
        tmp.write_text(json.dumps(info.record(), indent=2, sort_keys=True))
        tmp.replace(state_dir / DEVNET_FILE)
    except BaseException:
        await anvil.stop()
        raise
    assert anvil.proc is not None
    _SPAWNED[anvil.pid] = anvil.proc
    return info


async def devnet_status(state_dir: Path) -> DevnetStatus:
    """What the devnet recorded in ``state_dir`` is doing; never raises for a dead node."""
    state_dir = Path(state_dir)
    record = _read_record(state_dir)
    if record is None:
        return DevnetStatus(False, f"no devnet recorded in {state_dir}", str(state_dir))
    try:
        deployment: Deployment | None = Deployment.load(state_dir / DEPLOYMENT_FILE)
    except DeploymentNotFound:
        deployment = None
    pid, url = record["pid"], str(record["rpc_url"])
    funded = int(record.get("funded", 0))
    addresses = dict(deployment.addresses) if deployment else {}
    down = functools.partial(DevnetStatus, False, state_dir=str(state_dir), pid=pid, rpc_url=url,
                             addresses=addresses, accounts=await _accounts(None, None, funded))
    if not is_anvil(pid, record["port"]):
        return down(f"anvil (pid {pid}) is not running; `nuclux devnet down` clears the record")
    try:
        await rpc_call(url, "eth_chainId")
        conn = await ChainConnection.open(url)
    except _RPC_ERRORS as exc:
        return down(f"anvil (pid {pid}) is alive but its RPC at {url} does not answer: {exc}")
    async with conn:
        return DevnetStatus(True, f"anvil (pid {pid}) is serving {url}", str(state_dir), pid,
                            url, conn.chain_id, await conn.block_number(), addresses,
                            await _accounts(conn, deployment, funded))


async def devnet_down(state_dir: Path, timeout: float = 10.0) -> DevnetDown:
    """Stop the recorded anvil (only if that PID is still anvil) and forget it; idempotent."""
    state_dir = Path(state_dir)
    record = _read_record(state_dir)
    if record is None:
        return DevnetDown(False, None, f"no devnet recorded in {state_dir}; nothing to stop")
    pid, port = record["pid"], record["port"]
    proc = _SPAWNED.get(pid)
    if proc is not None:
        gone: Callable[[], bool] = lambda: proc.poll() is not None  # noqa: E731
    else:
        gone = lambda: not is_anvil(pid, port)  # noqa: E731
    if is_anvil(pid, port):
        await _terminate(pid, gone, timeout)
        message, stopped = f"stopped anvil (pid {pid}) at {record.get('rpc_url')}", True
    else:
        message, stopped = f"anvil (pid {pid}) had already exited; record removed", False
    gone()  # reaps our own child if it has exited
    _SPAWNED.pop(pid, None)
    (state_dir / DEVNET_FILE).unlink(missing_ok=True)
    return DevnetDown(stopped, pid, message)
