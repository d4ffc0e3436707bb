"""Running anvil, the local Ethereum node of the devnet and of the multi-process tests.

Theory of operation. anvil ships as a native binary inside the npm package
``@foundry-rs/anvil``; ``find_anvil`` locates it (``$NUCLUX_ANVIL`` first, then ``node_modules``
searching upward from this package and from the working directory). The binary itself is
started, never the Node wrapper in ``node_modules/.bin``, so exactly one PID owns the node. It
listens on loopback only and runs with ``--prune-history N``: no state is written to disk and
only the last N block states stay in memory, enough to replay a mined revert for its reason.

``AnvilProcess`` checks the port is free (or picks one, retrying if another process wins the
race for it), waits until JSON-RPC answers within a bounded time (the log tail explains a
failure), and stops only its own PID: SIGTERM, then SIGKILL. ``is_anvil`` tells whether a PID
recorded earlier is still that anvil (``/proc/PID/cmdline``), so a recycled PID is never
signalled.
"""

from __future__ import annotations

import asyncio
import os
import platform
import signal
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from nuclux.errors import ChainError, ChainUnavailable, UsageError

ANVIL_ENV = "NUCLUX_ANVIL"
LOOPBACK = "127.0.0.1"
DEV_CHAIN_ID = 31337
DEV_ACCOUNTS = 10
DEV_BALANCE_ETH = 1_000_000
KEPT_STATES = 64
START_TIMEOUT = 20.0
LOG_FILE = "anvil.log"
RPC_ERRORS = (ChainError, aiohttp.ClientError, OSError, asyncio.TimeoutError, ValueError, KeyError)
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


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
        "anvil not found (node_modules/@foundry-rs/anvil-linux-*/bin/anvil): run "
        "`scripts/bootstrap` (it runs npm install) in the Nuclux project root, "
        f"or set ${ANVIL_ENV} to an anvil binary"
    )


def free_port(port: int = 0) -> int:
    """Bind ``port`` on loopback (0: any) and release it; ``ChainUnavailable`` if it is taken."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError as exc:
            raise ChainUnavailable(f"port {port} on {LOOPBACK} is in use: {exc}") from None
        return int(s.getsockname()[1])


async def rpc_call(url: str, method: str, params: list[Any] | None = None) -> Any:
    """One raw JSON-RPC call, to probe a node without a web3 client (2 s at most)."""
    payload = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params or []}
    limit = aiohttp.ClientTimeout(total=2.0)
    async with (
        aiohttp.ClientSession(timeout=limit) as session,
        session.post(url, json=payload) as r,
    ):
        body = await r.json(content_type=None)
    if "error" in body:
        raise ChainError(f"{method} failed: {body['error']}")
    return body["result"]


def is_anvil(pid: int, port: int) -> bool:
    """Whether ``pid`` is a live anvil started on ``port`` (a zombie has no cmdline)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    return "anvil" in Path(argv[0]).name and f"\0--port\0{port}\0" in "\0".join(argv) + "\0"


async def wait_until(done: Callable[[], bool], seconds: float) -> bool:
    """Poll ``done`` until it holds (True) or ``seconds`` pass (False)."""
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def has_exited(pid: int, port: int) -> bool:
    """Whether anvil ``pid`` has exited; reaps it when it is this process's child."""
    try:
        done, _status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # started by another process (or reaped): ask /proc
        return not is_anvil(pid, port)
    return done == pid


def reap_zombie(pid: int) -> None:
    """Reap ``pid`` if it is a zombie child of this process; never touches a live process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state == "Z":
            os.waitpid(pid, os.WNOHANG)
    except (OSError, IndexError):  # gone, or not our child (ChildProcessError is an OSError)
        pass


async def terminate(pid: int, port: int, grace: float = 10.0) -> None:
    """SIGTERM anvil ``pid`` alone, SIGKILL it if it outlives ``grace``; wait until it is gone."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if has_exited(pid, port):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if await wait_until(lambda: has_exited(pid, port), wait):
            return
    raise ChainError(f"anvil (pid {pid}) did not exit after SIGKILL")


class AnvilProcess:
    """One anvil node on loopback, started and stopped by its owner; logs in ``state_dir``.

    ``detached`` puts it in its own session so it survives the process that started it. It is
    spawned with ``os.posix_spawn`` rather than ``Popen``: no ``Popen`` object is left to warn
    "still running" when a detached node rightly outlives this process.
    """

    def __init__(
        self,
        state_dir: Path,
        port: int | None = None,
        *,
        binary: Path | None = None,
        detached: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.state_dir = Path(state_dir)
        self.log_path = self.state_dir / LOG_FILE
        self.binary = binary
        self.detached = detached
        self.extra_args = tuple(extra_args)
        self.port = port or 0
        self._fixed_port = port is not None
        self._pid: int | None = None

    @property
    def rpc_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int:
        if self._pid is None:
            raise ChainError("anvil has not been started")
        return self._pid

    @property
    def running(self) -> bool:
        return self._pid is not None and not has_exited(self._pid, self.port)

    def command(self, binary: Path) -> list[str]:
        flags = {
            "--host": LOOPBACK,
            "--port": self.port,
            "--prune-history": KEPT_STATES,
            "--chain-id": DEV_CHAIN_ID,
            "--accounts": DEV_ACCOUNTS,
            "--balance": DEV_BALANCE_ETH,
        }
        args = [str(part) for item in flags.items() for part in item]
        return [str(binary), *args, "--quiet", *self.extra_args]

    def _spawn(self, binary: Path) -> int:
        log = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, log, 1),
            (os.POSIX_SPAWN_DUP2, log, 2),
        ]
        try:
            return os.posix_spawn(
                binary,
                self.command(binary),
                os.environ,
                file_actions=actions,
                setsid=self.detached,
                setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),  # as Popen restores them
            )
        except OSError as exc:
            raise ChainUnavailable(f"cannot start anvil ({binary}): {exc}") from exc
        finally:
            os.close(log)

    async def start(self, timeout: float = START_TIMEOUT) -> AnvilProcess:
        """Start anvil; return once its JSON-RPC answers, else raise ``ChainUnavailable``."""
        if self._pid is not None:
            raise UsageError("this anvil is already started")
        binary = self.binary or find_anvil()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        for _attempt in range(3):
            self.port = free_port(self.port if self._fixed_port else 0)
            self._pid = self._spawn(binary)
            try:
                exited = await self._wait_ready(self._pid, deadline)
            except BaseException:
                await self.stop()
                raise
            if not exited:
                return self
            if self._fixed_port or "in use" not in self.log_tail():
                break  # losing the race for a picked port is the only failure worth a retry
        raise ChainUnavailable(f"anvil exited at start ({self.rpc_url}):\n{self.log_tail()}")

    async def _wait_ready(self, pid: int, deadline: float) -> bool:
        """False once the RPC answers; True if anvil exited first."""
        while not has_exited(pid, self.port):
            try:
                if int(await rpc_call(self.rpc_url, "eth_chainId"), 16):
                    return False
            except RPC_ERRORS:
                pass
            if time.monotonic() > deadline:
                raise ChainUnavailable(
                    f"anvil did not answer on {self.rpc_url} in time; log tail:\n{self.log_tail()}"
                )
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
        if self._pid is not None:
            await terminate(self._pid, self.port, timeout)

    async def __aenter__(self) -> AnvilProcess:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
