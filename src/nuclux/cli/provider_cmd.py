"""``nuclux provider ...``: register and manage a provider in the on-chain registry.

The node daemon (``nuclux node``) registers itself; these commands are the same operations by
hand, for operators and scripts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import typer

from nuclux.chain import Ledger, ProviderInfo
from nuclux.chain.ledger import ProviderOffer
from nuclux.cli.chain_cmd import AccountOpt, DeploymentOpt, KeyEnvOpt
from nuclux.cli.output import (
    JsonFlag,
    command_ctx,
    emit,
    nux_arg,
    show_fields,
    stdout_console,
    table,
)
from nuclux.cli.session import ledger_session, signer
from nuclux.core.types import format_nux
from nuclux.errors import UsageError
from nuclux.keys.derive import from_private_key

provider_app = typer.Typer(help="Register and manage providers.", no_args_is_help=True)


def provider_dict(p: ProviderInfo) -> dict[str, Any]:
    return {
        "owner": p.owner,
        "operator": p.operator,
        "status": p.status,
        "stake_wei": p.stake,
        "faults": p.faults,
        "suspended_until": p.suspended_until,
        "endpoint": p.endpoint,
        "cert_fingerprint": p.cert_fingerprint.hex(),
        "x25519_key": p.x25519_key.hex(),
        "capacity": {
            "storage_gib": p.capacity[0],
            "compute_units": p.capacity[1],
            "egress_gib": p.capacity[2],
        },
        "price_wei": {"storage": p.price[0], "compute": p.price[1], "bandwidth": p.price[2]},
    }


def _hex32(text: str, what: str) -> bytes:
    try:
        raw = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        raise UsageError(f"{what} must be 64 hex digits") from None
    if len(raw) != 32:
        raise UsageError(f"{what} must be 32 bytes (64 hex digits)")
    return raw


@provider_app.command("register")
def register_cmd(
    ctx: typer.Context,
    endpoint: Annotated[str, typer.Option(help="https://HOST:PORT the node serves on.")],
    stake: Annotated[str, typer.Option(help="NuxCoin to stake.")],
    storage: Annotated[int, typer.Option(help="Storage offered, GiB.", min=0)] = 0,
    compute: Annotated[int, typer.Option(help="Concurrent compute slots.", min=0)] = 0,
    egress: Annotated[int, typer.Option(help="Egress offered, GiB.", min=0)] = 0,
    price_storage: Annotated[str, typer.Option(help="NUX per GiB-epoch.")] = "0",
    price_compute: Annotated[str, typer.Option(help="NUX per million fuel.")] = "0",
    price_egress: Annotated[str, typer.Option(help="NUX per GiB of egress.")] = "0",
    operator: Annotated[str | None, typer.Option(help="Operator (hot) key address.")] = None,
    cert_fingerprint: Annotated[
        str | None, typer.Option(help="SHA-256 of the node's TLS certificate (hex).")
    ] = None,
    account: AccountOpt = None,
    private_key_env: KeyEnvOpt = None,
    deployment: DeploymentOpt = None,
    json: JsonFlag = False,
) -> None:
    """Register as a provider: stake, endpoint, capacities and posted prices."""
    c = command_ctx(ctx, json=json)
    if storage + compute + egress == 0:
        raise UsageError("offer some capacity: --storage, --compute or --egress")
    fp = _hex32(cert_fingerprint, "--cert-fingerprint") if cert_fingerprint else bytes(32)
    acct = signer(c, account, private_key_env)
    offer = ProviderOffer(
        endpoint=endpoint,
        cert_fingerprint=fp,
        x25519_key=from_private_key(bytes(acct.key)).x25519_public,
        capacity=(storage, compute, egress),
        price=(
            nux_arg(price_storage, "--price-storage"),
            nux_arg(price_compute, "--price-compute"),
            nux_arg(price_egress, "--price-egress"),
        ),
    )
    amount = nux_arg(stake, "--stake")

    async def go() -> dict[str, Any]:
        async with ledger_session(c, acct, deployment) as ledger:
            await ledger.register_provider(offer, amount, operator=operator)
            return provider_dict(await ledger.provider(acct.address))

    data = asyncio.run(go())
    emit(
        c,
        data,
        lambda: stdout_console().print(
            f"registered {data['owner']} with {format_nux(amount)} NUX stake at {endpoint}"
        ),
    )


@provider_app.command("show")
def show_cmd(
    ctx: typer.Context,
    address: Annotated[str, typer.Argument(help="Owner address.")],
    deployment: DeploymentOpt = None,
    json: JsonFlag = False,
) -> None:
    """Show a provider's registry entry."""
    c = command_ctx(ctx, json=json)

    async def go() -> dict[str, Any]:
        async with ledger_session(c, None, deployment) as ledger:
            info = await ledger.provider(address)
        if info.status == "none":
            raise UsageError(f"{address} is not a registered provider")
        return provider_dict(info)

    data = asyncio.run(go())
    emit(c, data, lambda: show_fields(list(data.items())))


@provider_app.command("list")
def list_cmd(ctx: typer.Context, deployment: DeploymentOpt = None, json: JsonFlag = False) -> None:
    """List registered providers with their posted prices."""
    c = command_ctx(ctx, json=json)

    async def go() -> list[dict[str, Any]]:
        async with ledger_session(c, None, deployment) as ledger:
            return [provider_dict(p) for p in await ledger.providers()]

    rows = asyncio.run(go())
    emit(
        c,
        rows,
        lambda: table(
            "Providers",
            [
                "owner",
                "status",
                "stake",
                "endpoint",
                "storage/GiB-epoch",
                "compute/Mfuel",
                "egress/GiB",
            ],
            [
                (
                    r["owner"],
                    r["status"],
                    format_nux(r["stake_wei"]),
                    r["endpoint"],
                    format_nux(r["price_wei"]["storage"]),
                    format_nux(r["price_wei"]["compute"]),
                    format_nux(r["price_wei"]["bandwidth"]),
                )
                for r in rows
            ],
        ),
    )


def _simple(name: str, doc: str, fn: Callable[[Ledger], Awaitable[object]]) -> None:
    def cmd(
        ctx: typer.Context,
        account: AccountOpt = None,
        private_key_env: KeyEnvOpt = None,
        deployment: DeploymentOpt = None,
        json: JsonFlag = False,
    ) -> None:
        c = command_ctx(ctx, json=json)
        acct = signer(c, account, private_key_env)

        async def go() -> dict[str, Any]:
            async with ledger_session(c, acct, deployment) as ledger:
                await fn(ledger)
                data = provider_dict(await ledger.provider(acct.address))
                data["unbond_end"] = await ledger.unbond_end(acct.address)
                return data

        data = asyncio.run(go())
        emit(c, data, lambda: stdout_console().print(f"{name}: status {data['status']}"))

    cmd.__doc__ = doc
    provider_app.command(name)(cmd)


_simple("pause", "Stop taking new leases (existing ones continue).", lambda lg: lg.set_paused(True))
_simple("resume", "Take new leases again.", lambda lg: lg.set_paused(False))
_simple(
    "leave",
    "Deregister: unbonding ends at max(delay, last lease end + dispute window).",
    lambda lg: lg.leave(),
)
_simple("withdraw", "Withdraw the stake once unbonding has ended.", lambda lg: lg.withdraw_stake())
