"""A local network of provider nodes on the devnet: ``nuclux devnet up --nodes N``.

Theory of operation. ``start_nodes`` turns a running devnet (``nuclux.chain.devnet``) into a
network: for each node it makes an owner key, funds it (ether for gas, NuxCoin for the stake)
and the node's operator key (ether), writes the node's data directory as ``nuclux node init``
would (operator keystore, TLS identity, ``node.toml`` with a free loopback port), registers it
with the owner key as ``nuclux node register`` would, and starts ``nuclux node run`` detached
(its own session, output in ``node.log`` in its data directory). Every node is recorded in
``nodes.json`` in the devnet's state directory as soon as it is started, so ``stop_nodes``
(called by ``nuclux devnet down``) can stop exactly those processes: it signals a PID only
while ``/proc/PID/cmdline`` still shows that node's ``node run``, with SIGTERM first (the node
finishes requests in flight) and SIGKILL after the grace period.

The keys are devnet keys: owners' private keys and the operators' keystore passphrase are kept
in ``nodes.json`` (mode 0600) so the devnet's user can act as any provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import random
import signal
import socket
import sys
import time
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount

from nuclux.chain.connection import ChainConnection
from nuclux.chain.deployment import Deployment
from nuclux.chain.devnet import dev_account, devnet_status
from nuclux.chain.ledger import Ledger
from nuclux.core.types import ONE_NUX
from nuclux.errors import ChainError, UsageError
from nuclux.keys.derive import from_mnemonic, generate_mnemonic
from nuclux.keys.keystore import Keystore
from nuclux.net.tls import NodeIdentity
from nuclux.node.config import NodeConfig, identity_paths, save_config
from nuclux.node.daemon import register

NODES_FILE = "nodes.json"
NODE_RUN = [sys.executable, "-m", "nuclux", "node", "run"]
MAX_NODES = 32
DEVNET_KDF_N = 2**12  # devnet keystores: fast to open, not meant to resist an attacker
GAS_ETH = 10**19  # 10 ether each for owners and operators
START_TIMEOUT = 120.0  # a loaded 2-core machine starts eight nodes slowly
STOP_GRACE = 40.0  # a node gets SHUTDOWN_TIMEOUT (30 s) to finish requests


@dataclass(frozen=True, slots=True)
class LocalNode:
    index: int
    owner: str
    owner_key: str  # hex; a devnet key
    operator: str
    endpoint: str
    fingerprint: str
    data_dir: str
    pid: int

    @property
    def log_path(self) -> Path:
        return Path(self.data_dir) / "node.log"


@dataclass(frozen=True, slots=True)
class NodeState:
    node: LocalNode
    running: bool


def _record_path(state_dir: Path) -> Path:
    return Path(state_dir) / NODES_FILE


def _read(state_dir: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(_record_path(state_dir).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise UsageError(f"{_record_path(state_dir)} is unreadable: {err}") from None
    return data


def _write(state_dir: Path, passphrase: str, nodes: list[LocalNode]) -> None:
    path = _record_path(state_dir)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"passphrase": passphrase, "nodes": [asdict(n) for n in nodes]}, f, indent=1)
    tmp.replace(path)


def recorded_nodes(state_dir: Path) -> list[LocalNode]:
    data = _read(state_dir)
    return [] if data is None else [LocalNode(**n) for n in data["nodes"]]


def _is_our_node(node: LocalNode) -> bool:
    """True while ``node.pid`` is still that node's ``nuclux node run`` (not a recycled PID)."""
    try:
        argv = Path(f"/proc/{node.pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"run" in argv and node.data_dir.encode() in argv


def nodes_status(state_dir: Path) -> list[NodeState]:
    return [NodeState(n, _is_our_node(n)) for n in recorded_nodes(state_dir)]


@dataclass(frozen=True, slots=True)
class LocalOffer:
    storage_bytes: int
    stake: int
    price_storage: int
    compute_units: int
    price_compute: int


_PORTS_FLOOR = 10_000  # local nodes listen at or above this port ...
_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")


def _ephemeral_low() -> int:
    """The lowest port the kernel hands out for outgoing connections and port-0 binds."""
    try:
        return int(_EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default range starts here


def network_host(index: int, networks: int) -> str:
    """The loopback address of node ``index`` when the nodes are spread over ``networks``
    /24 networks: ``127.0.X.1`` with ``X = index % networks`` (Linux answers on all of
    127/8; placement sees each X as its own network, ``nuclux.core.spread``)."""
    return f"127.0.{index % networks}.1"


def _free_port(host: str = "127.0.0.1", taken: Collection[int] = ()) -> int:
    """A free loopback port *below* the kernel's ephemeral range (... and below this), not
    one of ``taken``.

    A node's port is chosen, and registered on chain as its endpoint, before the node process
    binds it. A port from the ephemeral range (what binding port 0 gives) can meanwhile be
    taken as the local end of any outgoing connection on the machine (a chain RPC call, a
    test's client), and the node then fails to start with "address already in use". Ports
    below that range are only ever taken by explicit binds; ``taken`` holds those chosen for
    other nodes of the same start that may not have bound theirs yet."""
    rng = random.SystemRandom()
    top = _ephemeral_low()
    if top - _PORTS_FLOOR >= 1_000:
        for _ in range(64):
            port = rng.randrange(_PORTS_FLOOR, top)
            if port in taken:
                continue
            with socket.socket() as s, contextlib.suppress(OSError):
                s.bind((host, port))
                return port
    for _ in range(64):  # no room below the range: take an ephemeral port after all
        with socket.socket() as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port not in taken:
            return port
    raise ChainError(f"no free port on {host} for a local node")


def _make_node_dir(
    data_dir: Path,
    owner: str,
    deployment: Path,
    rpc_url: str,
    offer: LocalOffer,
    passphrase: str,
    *,
    host: str = "127.0.0.1",
    taken: set[int] | None = None,
    corrupt_results: bool = False,
) -> tuple[NodeConfig, str, NodeIdentity]:
    port = _free_port(host, () if taken is None else taken)
    if taken is not None:
        taken.add(port)
    cfg = NodeConfig(
        data_dir=data_dir.resolve(),
        owner=owner,
        operator_account="operator",
        endpoint=f"https://{host}:{port}",
        listen_host=host,
        listen_port=port,
        storage_bytes=offer.storage_bytes,
        compute_units=offer.compute_units,
        egress_bytes=0,
        price_storage=offer.price_storage,
        price_compute=offer.price_compute,
        price_egress=0,
        stake=offer.stake,
        chain=rpc_url,
        deployment=deployment.resolve(),
        corrupt_results=corrupt_results,
    )
    keys = from_mnemonic(generate_mnemonic(os.urandom(32)))
    info = Keystore(cfg.data_dir / "keys", kdf_n=DEVNET_KDF_N).create("operator", keys, passphrase)
    if info.address is None:
        raise ChainError("the operator keystore was written without an address")
    identity = NodeIdentity.generate(owner)
    identity.save(*identity_paths(cfg))
    save_config(cfg)
    return cfg, info.address, identity


def _spawn(cfg: NodeConfig, passphrase: str, poll: float) -> int:
    """Start ``nuclux node run`` in its own session (it outlives this command, like the
    devnet's anvil), output appended to ``node.log``. ``posix_spawn`` rather than ``Popen``:
    no ``Popen`` object is left to warn "still running" when the node rightly outlives us."""
    opened = os.open(cfg.data_dir / "node.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    # above the standard descriptors: if this process runs with one of them closed, the log
    # could otherwise land on 0..2 and be overwritten by the child's own redirections
    log = fcntl.fcntl(opened, fcntl.F_DUPFD_CLOEXEC, 3)
    os.close(opened)
    env = {**os.environ, "NUCLUX_PASSPHRASE": passphrase}
    try:
        return os.posix_spawn(
            sys.executable,
            [*NODE_RUN, "--data-dir", str(cfg.data_dir), "--poll", str(poll)],
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log, 1),
                (os.POSIX_SPAWN_DUP2, log, 2),
            ],
            setsid=True,
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),  # as Popen restores them
        )
    finally:
        os.close(log)


async def _wait_serving(node: LocalNode, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    ended = ""
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            if b"serving https://" in node.log_path.read_bytes():
                return
        if not _is_our_node(node):
            ended = _ended(node.pid)
            if ended:
                break
        await asyncio.sleep(0.1)
    tail = node.log_path.read_text(errors="replace")[-2000:] if node.log_path.exists() else ""
    why = f"it {ended}" if ended else f"no 'serving' line within {timeout:.0f} s"
    raise ChainError(f"node {node.index} did not start ({why}; log {node.log_path}):\n{tail}")


def _ended(pid: int) -> str:
    """How process ``pid`` ended ("exited with status N", "was killed by SIGX"), or "" if it
    still runs. Only a child of this process can be asked; another gone process is "exited"."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return "" if Path(f"/proc/{pid}").exists() else "exited"
    if done == 0:
        return ""
    if os.WIFSIGNALED(status):
        return f"was killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


BID_FLOAT = 20 * ONE_NUX  # NuxCoin each node's operator starts with, for auction bid deposits


async def start_nodes(
    state_dir: Path,
    count: int,
    *,
    storage_bytes: int = 4 << 30,
    stake: int = 100 * ONE_NUX,
    price_storage: int = ONE_NUX // 1000,
    compute_units: int = 0,
    price_compute: int = ONE_NUX // 1000,
    corrupt_results: Sequence[int] = (),
    poll: float = 0.5,
    timeout: float = START_TIMEOUT,
    networks: int = 1,
) -> list[LocalNode]:
    """Create, fund, register and start ``count`` nodes on the running devnet, each offering
    ``storage_bytes`` and ``compute_units`` slots, spread over ``networks`` loopback /24
    networks (``network_host``). ``corrupt_results`` (tests only) names nodes, by index, that
    forge every compute result."""
    if not 1 <= count <= MAX_NODES:
        raise UsageError(f"a local network has 1..{MAX_NODES} nodes")
    if not 1 <= networks <= MAX_NODES:
        raise UsageError(f"local nodes are spread over 1..{MAX_NODES} networks")
    state_dir = Path(state_dir)
    if any(s.running for s in nodes_status(state_dir)):
        raise UsageError("local nodes are running already; `nuclux devnet down` first")
    status = await devnet_status(state_dir)
    if not status.running or status.rpc_url is None:
        raise ChainError(f"no devnet is running ({status.detail}); run `nuclux devnet up`")
    try:
        offer = LocalOffer(storage_bytes, stake, price_storage, compute_units, price_compute)
        lying = frozenset(corrupt_results)
        return await _start(state_dir, status.rpc_url, count, offer, lying, poll, timeout, networks)
    except BaseException:
        await stop_nodes(state_dir)  # never leave half a network running
        raise


async def _start(
    state_dir: Path,
    rpc_url: str,
    count: int,
    offer: LocalOffer,
    lying: frozenset[int],
    poll: float,
    timeout: float,
    networks: int,
) -> list[LocalNode]:
    stake = offer.stake
    dep_path = state_dir / "deployment.json"
    deployment = Deployment.load(dep_path)
    passphrase = os.urandom(16).hex()
    nodes: list[LocalNode] = []
    ports: set[int] = set()  # chosen for this start's nodes, bound once each node is up
    async with await ChainConnection.open(rpc_url, tx_timeout=60) as conn:
        faucet = Ledger(conn, deployment, dev_account(0))
        for i in range(count):
            owner: LocalAccount = Account.from_key(os.urandom(32))
            data_dir = state_dir / "nodes" / f"node{i}"
            if data_dir.exists():
                raise UsageError(f"{data_dir} exists already; remove it or use another devnet")
            cfg, operator, identity = _make_node_dir(
                data_dir,
                owner.address,
                dep_path,
                rpc_url,
                offer,
                passphrase,
                host=network_host(i, networks),
                taken=ports,
                corrupt_results=i in lying,
            )
            await conn.fund_gas(owner.address, GAS_ETH)
            await conn.fund_gas(operator, GAS_ETH)
            await faucet.transfer(owner.address, stake)
            await faucet.transfer(operator, BID_FLOAT)  # the operator pays bid deposits
            await register(cfg, owner, operator, conn, deployment)
            pid = _spawn(cfg, passphrase, poll)
            nodes.append(
                LocalNode(
                    index=i,
                    owner=owner.address,
                    owner_key=bytes(owner.key).hex(),
                    operator=operator,
                    endpoint=cfg.endpoint,
                    fingerprint=identity.fingerprint.hex(),
                    data_dir=str(cfg.data_dir),
                    pid=pid,
                )
            )
            _write(state_dir, passphrase, nodes)  # recorded at once: `down` can stop it
    await asyncio.gather(*(_wait_serving(n, timeout) for n in nodes))
    return nodes


async def stop_nodes(state_dir: Path, grace: float = STOP_GRACE) -> list[LocalNode]:
    """SIGTERM every recorded node that still runs, SIGKILL after ``grace``; forget them all.
    Returns the nodes that were running."""
    running = [s.node for s in nodes_status(state_dir) if s.running]
    for node in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(node.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(_is_our_node(n) for n in running) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)  # polling /proc: other processes' exits signal no event here
    for node in running:
        if _is_our_node(node):
            with contextlib.suppress(ProcessLookupError):
                os.kill(node.pid, signal.SIGKILL)
    _reap(running)
    with contextlib.suppress(FileNotFoundError):
        _record_path(state_dir).unlink()
    return running


def _reap(nodes: list[LocalNode]) -> None:
    """Collect exit statuses of nodes this process started (else they stay zombies)."""
    for node in nodes:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(node.pid, os.WNOHANG)
