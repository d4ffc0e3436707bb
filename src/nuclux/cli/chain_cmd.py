"""``nuclux chain deploy|info``, ``nuclux balance`` and ``nuclux transfer``."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from nuclux.chain import ChainConnection, DeployParams, deploy
from nuclux.cli.keys_cmd import open_keystore
from nuclux.cli.output import JsonFlag, command_ctx, emit, show_fields, stdout_console
from nuclux.cli.session import deployment_path, ledger_session, load_deployment, signer
from nuclux.core.types import format_nux, parse_nux
from nuclux.errors import UsageError

chain_app = typer.Typer(
    help="Deploy the Nuclux contracts and inspect a deployment.", no_args_is_help=True
)

AccountOpt = Annotated[
    str | None, typer.Option("--account", "-a", help="Keystore account (name or address).")
]
KeyEnvOpt = Annotated[
    str | None,
    typer.Option("--private-key-env", help="Sign with the raw key in this env var (devnets)."),
]
DeploymentOpt = Annotated[
    Path | None, typer.Option("--deployment", help="Deployment file (default: the devnet's).")
]
NoMarketOpt = Annotated[
    bool,
    typer.Option(
        "--no-market", help="Open new leases at providers' posted prices, not by auction."
    ),
]


@chain_app.command("deploy")
def deploy_cmd(
    ctx: typer.Context,
    rpc: Annotated[str, typer.Option("--rpc", help="JSON-RPC URL of the chain.")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Where to write the deployment.")
    ] = None,
    epoch_length: Annotated[int, typer.Option(help="Seconds per epoch.")] = 3600,
    account: AccountOpt = None,
    private_key_env: KeyEnvOpt = None,
    json: JsonFlag = False,
) -> None:
    """Deploy NuxCoin, the registry, the lease manager and the settlement modules."""
    c = command_ctx(ctx, json=json)
    if not rpc.startswith(("http://", "https://")):
        raise UsageError("--rpc must be an http(s) JSON-RPC URL")
    if epoch_length <= 0:
        raise UsageError("--epoch-length must be positive")
    acct = signer(c, account, private_key_env)
    target = out or deployment_path(c)

    async def go() -> dict[str, object]:
        async with await ChainConnection.open(rpc, confirmations=c.config.confirmations) as conn:
            dep = await deploy(conn, acct, DeployParams(epoch_length=epoch_length))
        dep.save(target)
        return {"file": str(target), **dep.to_json()}

    data = asyncio.run(go())
    emit(c, data, lambda: show_fields([("deployment", target), *_address_rows(data)]))


def _address_rows(data: dict[str, object]) -> list[tuple[str, object]]:
    addresses = data.get("addresses")
    return list(addresses.items()) if isinstance(addresses, dict) else []


@chain_app.command("info")
def info_cmd(ctx: typer.Context, deployment: DeploymentOpt = None, json: JsonFlag = False) -> None:
    """Show the deployment in use: chain, contract addresses and parameters."""
    c = command_ctx(ctx, json=json)
    dep = load_deployment(c, deployment)
    data = dep.to_json()
    emit(
        c,
        data,
        lambda: show_fields(
            [
                ("chain id", dep.chain_id),
                ("rpc", dep.rpc_url),
                *dep.addresses.items(),
                ("epoch length", f"{dep.params.epoch_length} s"),
            ]
        ),
    )


def balance_cmd(
    ctx: typer.Context,
    address: Annotated[str | None, typer.Argument(help="Address (default: your account).")] = None,
    account: AccountOpt = None,
    deployment: DeploymentOpt = None,
    json: JsonFlag = False,
) -> None:
    """Show the NuxCoin and ether balance of an address or account."""
    c = command_ctx(ctx, json=json)
    if address is None:
        name = account or c.config.account
        if name is None:
            raise UsageError("give an address, --account, or set a default account")
        address = open_keystore(c).info(name).address
    if address is None:
        raise UsageError("that account's keystore file is unreadable; see `nuclux keys list`")
    who: str = address

    async def go() -> dict[str, object]:
        async with ledger_session(c, None, deployment) as ledger:
            nux = await ledger.balance(who)
            eth = await ledger.conn.eth_balance(who)
        return {"address": who, "nux": format_nux(nux), "nux_wei": nux, "eth_wei": eth}

    data = asyncio.run(go())
    emit(c, data, lambda: stdout_console().print(f"{data['address']}: {data['nux']} NUX"))


def transfer_cmd(
    ctx: typer.Context,
    to: Annotated[str, typer.Argument(help="Recipient address.")],
    amount: Annotated[str, typer.Argument(help="NuxCoin amount, e.g. 1.5 or 1000wei.")],
    account: AccountOpt = None,
    private_key_env: KeyEnvOpt = None,
    deployment: DeploymentOpt = None,
    json: JsonFlag = False,
) -> None:
    """Send NuxCoin to an address."""
    c = command_ctx(ctx, json=json)
    try:
        wei = parse_nux(amount)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if wei == 0:
        raise UsageError("amount must be positive")
    acct = signer(c, account, private_key_env)

    async def go() -> dict[str, object]:
        async with ledger_session(c, acct, deployment) as ledger:
            receipt = await ledger.transfer(to, wei)
            left = await ledger.balance()
        return {
            "from": acct.address,
            "to": to,
            "amount_wei": wei,
            "tx": receipt["transactionHash"].hex(),
            "balance_wei": left,
        }

    data = asyncio.run(go())
    emit(
        c,
        data,
        lambda: stdout_console().print(
            f"sent {format_nux(wei)} NUX to {to} (tx {data['tx']}); "
            f"balance {format_nux(int(str(data['balance_wei'])))} NUX"
        ),
    )
