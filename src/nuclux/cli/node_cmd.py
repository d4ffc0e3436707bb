"""``nuclux node init|register|run|status|drain|resume|leave``: run a provider node.

``init`` creates the node's operator (hot) key, TLS identity and ``node.toml``; ``register``
stakes and registers with the owner (cold) key; ``run`` serves with the operator key only.
"""

from __future__ import annotations

import asyncio
import json as json_module
import logging
import os
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from eth_account import Account
from eth_account.signers.local import LocalAccount

from nuclux import aio
from nuclux.chain import ChainConnection, Deployment, Ledger
from nuclux.cli.chain_cmd import AccountOpt, DeploymentOpt, KeyEnvOpt
from nuclux.cli.keys_cmd import SCRYPT_N_ENV, get_passphrase
from nuclux.cli.output import JsonFlag, command_ctx, emit, nux_arg, show_fields, stdout_console
from nuclux.cli.session import deployment_path, load_deployment, rpc_url, signer
from nuclux.core.types import format_nux
from nuclux.core.units import parse_size
from nuclux.errors import ConfigError, UsageError
from nuclux.gctune import freeze_startup
from nuclux.keys.derive import from_mnemonic, generate_mnemonic
from nuclux.keys.keystore import DEFAULT_KDF_N, Keystore
from nuclux.net.tls import NodeIdentity, client_ssl_context
from nuclux.node.bid_agent_state import read_summary
from nuclux.node.config import (
    AUTO,
    NodeConfig,
    identity_paths,
    load_config,
    parse_endpoint,
    save_config,
)
from nuclux.node.posted_prices import read_choices

node_app = typer.Typer(help="Run a provider node.", no_args_is_help=True)

DataDirOpt = Annotated[Path, typer.Option("--data-dir", help="The node's data directory.")]


def _keystore(cfg_dir: Path) -> Keystore:
    text = os.environ.get(SCRYPT_N_ENV)
    return Keystore(cfg_dir / "keys", kdf_n=int(text) if text else DEFAULT_KDF_N)


def _operator(cfg: NodeConfig) -> LocalAccount:
    keys = _keystore(cfg.data_dir).load(cfg.operator_account, get_passphrase(confirm=False))
    acct: LocalAccount = Account.from_key(keys.eth_private_key)
    return acct


async def _connect(cfg: NodeConfig) -> tuple[ChainConnection, Deployment]:
    if cfg.deployment is None:
        raise ConfigError("node.toml names no deployment file")
    dep = Deployment.load(cfg.deployment)
    conn = await ChainConnection.open(cfg.chain)
    return conn, dep


@asynccontextmanager
async def _ledger(cfg: NodeConfig, account: LocalAccount) -> AsyncIterator[Ledger]:
    """A connected ``Ledger`` for ``account`` on the node's chain, closed afterwards."""
    conn, dep = await _connect(cfg)
    try:
        yield Ledger(conn, dep, account)
    finally:
        await conn.close()


@node_app.command("init")
def init_cmd(
    ctx: typer.Context,
    data_dir: DataDirOpt,
    endpoint: Annotated[str, typer.Option(help="https://HOST:PORT clients reach.")],
    owner: Annotated[str, typer.Option(help="The provider's owner (cold key) address.")],
    storage: Annotated[str, typer.Option(help="Storage offered, e.g. 50GiB.")] = "0",
    compute_units: Annotated[int, typer.Option(help="Concurrent compute slots.", min=0)] = 0,
    egress: Annotated[str, typer.Option(help="Egress offered, e.g. 1TiB.")] = "0",
    listen: Annotated[
        str | None, typer.Option(help="HOST:PORT to bind (default: the endpoint's).")
    ] = None,
    price_storage: Annotated[
        str, typer.Option(help="NUX per GiB-epoch, or 'auto': the market's reference price.")
    ] = "0.001",
    price_compute: Annotated[
        str, typer.Option(help="NUX per million fuel, or 'auto' (the reference price).")
    ] = "0.001",
    price_egress: Annotated[
        str, typer.Option(help="NUX per GiB of egress, or 'auto' (the reference price).")
    ] = "0.001",
    stake: Annotated[str, typer.Option(help="NuxCoin to stake at registration.")] = "100",
    deployment: DeploymentOpt = None,
    json: JsonFlag = False,
) -> None:
    """Create a node: operator key, TLS identity and node.toml."""
    c = command_ctx(ctx, json=json)
    host, port = parse_endpoint(endpoint)
    if listen:
        lhost, _, lport = listen.rpartition(":")
        if not lhost or not lport.isdigit():
            raise UsageError("--listen must be HOST:PORT")
        host, port = lhost, int(lport)
    try:
        storage_bytes, egress_bytes = parse_size(storage), parse_size(egress)
    except ValueError as err:
        raise UsageError(str(err)) from None
    dep_path = deployment_path(c, deployment)
    dep = load_deployment(c, deployment)
    cfg = NodeConfig(
        data_dir=data_dir.resolve(),
        owner=owner,
        operator_account="operator",
        endpoint=endpoint,
        listen_host=host,
        listen_port=port,
        storage_bytes=storage_bytes,
        compute_units=compute_units,
        egress_bytes=egress_bytes,
        price_storage=_price_arg(price_storage, "--price-storage"),
        price_compute=_price_arg(price_compute, "--price-compute"),
        price_egress=_price_arg(price_egress, "--price-egress"),
        price_auto=(_is_auto(price_storage), _is_auto(price_compute), _is_auto(price_egress)),
        stake=nux_arg(stake, "--stake"),
        chain=rpc_url(c, dep),
        deployment=dep_path.resolve(),
    )
    if (cfg.data_dir / "node.toml").exists():
        raise UsageError(f"{cfg.data_dir} already holds a node")
    if sum(cfg.capacity) == 0:
        raise UsageError("offer some capacity: --storage, --compute-units or --egress")
    keys = from_mnemonic(generate_mnemonic(os.urandom(32)))
    info = _keystore(cfg.data_dir).create("operator", keys, get_passphrase(confirm=True))
    identity = NodeIdentity.generate(owner)
    identity.save(*identity_paths(cfg))
    save_config(cfg)
    data = {
        "data_dir": str(cfg.data_dir),
        "operator": info.address,
        "owner": owner,
        "fingerprint": identity.fingerprint.hex(),
        "endpoint": endpoint,
    }
    emit(
        c,
        data,
        lambda: show_fields(
            [
                *data.items(),
                (
                    "next",
                    "fund the operator with gas, then `nuclux node register` with the owner key",
                ),
            ]
        ),
    )


@node_app.command("register")
def register_cmd(
    ctx: typer.Context,
    data_dir: DataDirOpt,
    account: AccountOpt = None,
    private_key_env: KeyEnvOpt = None,
    json: JsonFlag = False,
) -> None:
    """Stake and register (or update) the node, signed by the owner (cold) key."""
    c = command_ctx(ctx, json=json)
    cfg = load_config(data_dir.resolve())
    from nuclux.node.daemon import register  # the node itself: imported when used

    owner = signer(c, account, private_key_env)
    operator = _keystore(cfg.data_dir).info(cfg.operator_account).address
    if operator is None:
        raise ConfigError("the operator keystore is unreadable")

    async def go() -> dict[str, Any]:
        async with _ledger(cfg, owner) as ledger:
            await register(cfg, owner, operator, ledger.conn, ledger.deployment)
            info = await ledger.provider(cfg.owner)
        return {
            "owner": info.owner,
            "operator": info.operator,
            "status": info.status,
            "stake_wei": info.stake,
            "endpoint": info.endpoint,
            "fingerprint": info.cert_fingerprint.hex(),
        }

    data = asyncio.run(go())
    emit(c, data, lambda: show_fields(list(data.items())))


@node_app.command("run")
def run_cmd(
    ctx: typer.Context,
    data_dir: DataDirOpt,
    poll: Annotated[float, typer.Option(help="Chain poll interval, seconds.")] = 1.0,
) -> None:
    """Serve until SIGTERM or SIGINT (the operator key's passphrase: NUCLUX_PASSPHRASE)."""
    from nuclux.node.daemon import NodeRuntime  # the node itself: imported when it runs

    command_ctx(ctx)
    cfg = load_config(data_dir.resolve())
    operator = _operator(cfg)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    async def go() -> None:
        conn, dep = await _connect(cfg)
        try:
            rt = await NodeRuntime.start(
                cfg, operator, conn, dep, poll_interval=poll, owns_connection=True
            )
        except BaseException:
            await conn.close()
            raise
        freeze_startup()  # the runtime lives as long as the process: the collector skips it
        print(f"serving {rt.url} as {cfg.owner}", flush=True)
        await rt.serve_until_signalled()

    aio.run(go())  # uvloop unless NUCLUX_LOOP=asyncio (measured: docs/node.md)


@node_app.command("status")
def status_cmd(ctx: typer.Context, data_dir: DataDirOpt, json: JsonFlag = False) -> None:
    """Identity, registration, capacity, usage, open leases and earnings."""
    c = command_ctx(ctx, json=json)
    cfg = load_config(data_dir.resolve())
    identity = NodeIdentity.load(*identity_paths(cfg))

    async def go() -> dict[str, Any]:
        async with _ledger(cfg, Account.create()) as ledger:
            info = await ledger.provider(cfg.owner)
            leases = await ledger.leases_of(cfg.owner, as_provider_only=True)
        open_leases = [x for x in leases if not x.state.is_terminal]
        return {
            "owner": cfg.owner,
            "endpoint": cfg.endpoint,
            "fingerprint": identity.fingerprint.hex(),
            "registered": info.status != "none",
            "status": info.status,
            "operator": info.operator,
            "stake_wei": info.stake,
            "registered_fingerprint_matches": info.cert_fingerprint == identity.fingerprint,
            "capacity": {
                "storage_bytes": cfg.storage_bytes,
                "compute_units": cfg.compute_units,
                "egress_bytes": cfg.egress_bytes,
            },
            "open_leases": [
                {"id": x.id, "state": x.state.label, "class": x.cls.name.lower(), "units": x.units}
                for x in open_leases
            ],
            "earned_wei": sum(x.paid for x in leases),
            "running": _running_info(cfg),
            "bids": read_summary(cfg.data_dir),
            "prices": read_choices(cfg),
        }

    data = asyncio.run(go())
    emit(
        c,
        data,
        lambda: show_fields(
            [
                ("owner", data["owner"]),
                ("status", data["status"]),
                ("endpoint", data["endpoint"]),
                ("fingerprint", data["fingerprint"]),
                ("stake", format_nux(data["stake_wei"])),
                ("open leases", len(data["open_leases"])),
                ("earned", format_nux(data["earned_wei"])),
                ("running", bool(data["running"])),
                ("bids", _bids_line(data["bids"])),
                ("prices", _prices_line(data["prices"])),
            ]
        ),
    )


def _is_auto(value: str) -> bool:
    return value.strip().lower() == AUTO


def _price_arg(value: str, flag: str) -> int:
    """A posted price in wei; 0 for 'auto' (``NodeConfig.price_auto`` says so)."""
    return 0 if _is_auto(value) else nux_arg(value, flag)


def _prices_line(prices: dict[str, dict[str, Any]]) -> str:
    """Each class's posted price and where it came from (``config``, ``reference``, ...)."""
    return ", ".join(
        f"{name} {format_nux(p['price'])} ({p['source']})" for name, p in prices.items()
    )


def _bids_line(bids: dict[str, Any] | None) -> str:
    """The bid agent's counters in one line (``-`` before it ever bid)."""
    if bids is None:
        return "-"
    c = bids["counters"]
    return (
        f"{c['committed']} made, {c['won']} won, {c['lost']} lost, {len(bids['pending'])} "
        f"pending, {c['unrevealed']} unrevealed; script {c['script_ok']} ok, "
        f"{c['script_skip']} skipped, {c['script_failures']} failed"
    )


def _running_info(cfg: NodeConfig) -> dict[str, Any] | None:
    """The running node's /v1/info, pinned to our own certificate, or None."""
    ctx = client_ssl_context(NodeIdentity.load(*identity_paths(cfg)).fingerprint)
    url = f"https://{cfg.listen_host}:{cfg.listen_port}/v1/info"
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=3) as resp:
            out: dict[str, Any] = json_module.loads(resp.read())
            return out
    except OSError:
        return None


def _operator_action(ctx: typer.Context, data_dir: Path, paused: bool, json: bool) -> None:
    c = command_ctx(ctx, json=json)
    cfg = load_config(data_dir.resolve())
    operator = _operator(cfg)

    async def go() -> str:
        async with _ledger(cfg, operator) as ledger:
            await ledger.set_paused(paused, provider=cfg.owner)
            return (await ledger.provider(cfg.owner)).status

    status = asyncio.run(go())
    emit(
        c,
        {"owner": cfg.owner, "status": status},
        lambda: stdout_console().print(f"{cfg.owner}: {status}"),
    )


@node_app.command("drain")
def drain_cmd(ctx: typer.Context, data_dir: DataDirOpt, json: JsonFlag = False) -> None:
    """Take no new leases (existing ones are served to their end)."""
    _operator_action(ctx, data_dir, True, json)


@node_app.command("resume")
def resume_cmd(ctx: typer.Context, data_dir: DataDirOpt, json: JsonFlag = False) -> None:
    """Take new leases again after a drain."""
    _operator_action(ctx, data_dir, False, json)


@node_app.command("leave")
def leave_cmd(
    ctx: typer.Context,
    data_dir: DataDirOpt,
    account: AccountOpt = None,
    private_key_env: KeyEnvOpt = None,
    json: JsonFlag = False,
) -> None:
    """Deregister (owner key): unbonding ends after the last lease's dispute window."""
    c = command_ctx(ctx, json=json)
    cfg = load_config(data_dir.resolve())
    owner = signer(c, account, private_key_env)

    async def go() -> dict[str, Any]:
        async with _ledger(cfg, owner) as ledger:
            await ledger.leave()
            return {"owner": owner.address, "unbond_end": await ledger.unbond_end(owner.address)}

    data = asyncio.run(go())
    emit(
        c,
        data,
        lambda: stdout_console().print(
            f"{owner.address} is leaving; stake withdrawable at chain time {data['unbond_end']}"
        ),
    )
