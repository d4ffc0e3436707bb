"""``nuclux lease ...``: open, answer, fund, end and inspect leases from the command line."""

from __future__ import annotations

import asyncio
import json as jsonlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from nuclux.chain import Ledger
from nuclux.chain.revision import Revision, provider_signed_from_json
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
from nuclux.core.lease import Lease
from nuclux.core.types import ResourceClass, format_nux
from nuclux.errors import UsageError

lease_app = typer.Typer(help="Open, answer, fund, end and inspect leases.", no_args_is_help=True)

LeaseArg = Annotated[int, typer.Argument(help="Lease id.", min=1)]


def lease_dict(lease: Lease) -> dict[str, Any]:
    return {
        "id": lease.id,
        "state": lease.state.label,
        "class": lease.cls.name.lower(),
        "consumer": lease.consumer,
        "provider": lease.provider,
        "units": lease.units,
        "price_wei": lease.price,
        "term_epochs": lease.term_epochs,
        "start_epoch": lease.start_epoch,
        "end_epoch": lease.end_epoch,
        "escrow_wei": lease.escrow,
        "paid_wei": lease.paid,
        "faults": lease.faults,
        "deadline": lease.deadline,
        "extension_epochs": lease.ext_epochs,
        "extension_escrow_wei": lease.ext_escrow,
    }


def _act(
    ctx: typer.Context,
    account: str | None,
    key_env: str | None,
    deployment: Any,
    json: bool,
    lease_id: int,
    action: Callable[[Ledger], Awaitable[object]],
    verb: str,
) -> None:
    c = command_ctx(ctx, json=json)
    acct = signer(c, account, key_env)

    async def go() -> dict[str, Any]:
        async with ledger_session(c, acct, deployment) as ledger:
            result = await action(ledger)
            lease = await ledger.lease(lease_id)
        data = lease_dict(lease)
        if isinstance(result, int):
            data["amount_wei"] = result
        return data

    data = asyncio.run(go())
    emit(c, data, lambda: stdout_console().print(f"lease {lease_id} {verb}: now {data['state']}"))


@lease_app.command("open")
def open_cmd(
    ctx: typer.Context,
    provider: Annotated[str, typer.Argument(help="Provider (owner) address.")],
    cls: Annotated[str, typer.Option("--class", help="storage, compute or bandwidth.")],
    units: Annotated[int, typer.Option(help="Units (GiB, compute slots, GiB of egress).", min=1)],
    epochs: Annotated[int, typer.Option(help="Term in epochs.", min=1)],
    escrow: Annotated[str, typer.Option(help="NuxCoin to lock, e.g. 2.5.")],
    max_price: Annotated[str, typer.Option(help="Highest acceptable price per unit.")],
    account: AccountOpt = None,
    private_key_env: KeyEnvOpt = None,
    deployment: DeploymentOpt = None,
    json: JsonFlag = False,
) -> None:
    """Open a lease on a provider at its posted price, locking escrow."""
    try:
        rc = ResourceClass.parse(cls)
    except ValueError as err:
        raise UsageError(str(err)) from None
    esc, cap = nux_arg(escrow, "--escrow"), nux_arg(max_price, "--max-price")
    if esc == 0:
        raise UsageError("--escrow must be positive")
    c = command_ctx(ctx, json=json)
    acct = signer(c, account, private_key_env)

    async def go() -> dict[str, Any]:
        async with ledger_session(c, acct, deployment) as ledger:
            lid = await ledger.open_lease(provider, rc, units, epochs, cap, esc)
            return lease_dict(await ledger.lease(lid))

    data = asyncio.run(go())
    emit(
        c,
        data,
        lambda: stdout_console().print(
            f"opened lease {data['id']} ({data['class']}, {units} units x {epochs} epochs at "
            f"{format_nux(data['price_wei'])} NUX); waiting for the provider to accept"
        ),
    )


def _simple(name: str, doc: str, verb: str, fn: Callable[[Ledger, int], Awaitable[object]]) -> None:
    def cmd(
        ctx: typer.Context,
        lease_id: LeaseArg,
        account: AccountOpt = None,
        private_key_env: KeyEnvOpt = None,
        deployment: DeploymentOpt = None,
        json: JsonFlag = False,
    ) -> None:
        _act(
            ctx,
            account,
            private_key_env,
            deployment,
            json,
            lease_id,
            lambda ledger: fn(ledger, lease_id),
            verb,
        )

    cmd.__doc__ = doc
    lease_app.command(name)(cmd)


_simple(
    "accept",
    "Accept a ticketed lease (provider owner or operator).",
    "accepted",
    lambda lg, i: lg.accept(i),
)
_simple(
    "decline",
    "Decline a ticketed lease: the consumer is refunded.",
    "declined",
    lambda lg, i: lg.decline(i),
)
_simple(
    "accept-extension",
    "Accept a pending extension (provider).",
    "extended",
    lambda lg, i: lg.accept_extension(i),
)
_simple(
    "decline-extension",
    "Decline a pending extension (provider).",
    "extension declined",
    lambda lg, i: lg.decline_extension(i),
)
_simple(
    "claim", "Pay the provider what it has earned so far.", "claimed", lambda lg, i: lg.claim(i)
)
_simple(
    "cancel",
    "Cancel (consumer): a ticket is refunded, an active lease starts closing.",
    "cancelled",
    lambda lg, i: lg.cancel(i),
)
_simple(
    "end-term",
    "Move a lease whose term is over into its dispute window.",
    "ended",
    lambda lg, i: lg.end_term(i),
)
_simple("settle", "Settle a lease after its dispute window.", "settled", lambda lg, i: lg.settle(i))
_simple(
    "expire",
    "Close a ticket its provider did not accept in time.",
    "expired",
    lambda lg, i: lg.expire_ticket(i),
)


@lease_app.command("extend")
def extend_cmd(
    ctx: typer.Context,
    lease_id: LeaseArg,
    epochs: Annotated[int, typer.Option(help="Further epochs.", min=1)],
    escrow: Annotated[str, typer.Option(help="NuxCoin to add with the extension.")] = "0",
    account: AccountOpt = None,
    private_key_env: KeyEnvOpt = None,
    deployment: DeploymentOpt = None,
    json: JsonFlag = False,
) -> None:
    """Buy a longer term; the provider must accept it."""
    add = nux_arg(escrow, "--escrow")
    _act(
        ctx,
        account,
        private_key_env,
        deployment,
        json,
        lease_id,
        lambda lg: lg.extend(lease_id, epochs, add),
        "extension requested",
    )


@lease_app.command("top-up")
def top_up_cmd(
    ctx: typer.Context,
    lease_id: LeaseArg,
    amount: Annotated[str, typer.Argument(help="NuxCoin to add.")],
    account: AccountOpt = None,
    private_key_env: KeyEnvOpt = None,
    deployment: DeploymentOpt = None,
    json: JsonFlag = False,
) -> None:
    """Add escrow to a running lease (no acceptance needed)."""
    add = nux_arg(amount, "amount")
    if add == 0:
        raise UsageError("amount must be positive")
    _act(
        ctx,
        account,
        private_key_env,
        deployment,
        json,
        lease_id,
        lambda lg: lg.top_up(lease_id, add),
        "topped up",
    )


def _revision_file(path: Path) -> tuple[Revision, bytes]:
    try:
        doc = jsonlib.loads(path.read_bytes())
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror or err}") from None
    except ValueError as err:
        raise UsageError(f"{path} is not JSON: {err}") from None
    try:
        return provider_signed_from_json(doc)
    except UsageError as err:
        raise UsageError(f"{path}: {err}") from None


@lease_app.command("report-conflict")
def report_conflict_cmd(
    ctx: typer.Context,
    file_a: Annotated[Path, typer.Argument(help="One signed revision (JSON).")],
    file_b: Annotated[Path, typer.Argument(help="Another with the same number (JSON).")],
    account: AccountOpt = None,
    private_key_env: KeyEnvOpt = None,
    deployment: DeploymentOpt = None,
    json: JsonFlag = False,
) -> None:
    """Report two different storage revisions the provider signed with the same number (each
    file as `GET /v1/leases/ID/revisions/latest` returns it): a fault on the provider."""
    (a, sig_a), (b, sig_b) = _revision_file(file_a), _revision_file(file_b)
    c = command_ctx(ctx, json=json)
    acct = signer(c, account, private_key_env)

    async def go() -> dict[str, Any]:
        async with ledger_session(c, acct, deployment) as ledger:
            report = await ledger.report_conflict(a, sig_a, b, sig_b)
            lease = await ledger.lease(a.lease_id)
        return {
            **lease_dict(lease),
            "conflict_revision": report.revision,
            "lease_failed": report.lease_failed,
        }

    data = asyncio.run(go())
    emit(
        c,
        data,
        lambda: stdout_console().print(
            f"lease {data['id']}: conflicting revision {data['conflict_revision']} reported; "
            f"the lease has {data['faults']} fault(s), now {data['state']}"
        ),
    )


@lease_app.command("show")
def show_cmd(
    ctx: typer.Context, lease_id: LeaseArg, deployment: DeploymentOpt = None, json: JsonFlag = False
) -> None:
    """Show one lease."""
    c = command_ctx(ctx, json=json)

    async def go() -> dict[str, Any]:
        async with ledger_session(c, None, deployment) as ledger:
            lease = await ledger.lease(lease_id)
            claimable, _ = await ledger.claimable(lease_id)
        return {**lease_dict(lease), "claimable_wei": claimable}

    data = asyncio.run(go())
    emit(c, data, lambda: show_fields([(k.replace("_", " "), v) for k, v in data.items()]))


@lease_app.command("list")
def list_cmd(
    ctx: typer.Context,
    address: Annotated[str, typer.Argument(help="Consumer or provider address.")],
    deployment: DeploymentOpt = None,
    json: JsonFlag = False,
) -> None:
    """List the leases an address holds as consumer or provider."""
    c = command_ctx(ctx, json=json)

    async def go() -> list[dict[str, Any]]:
        async with ledger_session(c, None, deployment) as ledger:
            return [lease_dict(x) for x in await ledger.leases_of(address)]

    rows = asyncio.run(go())
    emit(
        c,
        rows,
        lambda: table(
            "Leases",
            ["id", "class", "state", "units", "escrow", "paid"],
            [
                (
                    r["id"],
                    r["class"],
                    r["state"],
                    r["units"],
                    format_nux(r["escrow_wei"]),
                    format_nux(r["paid_wei"]),
                )
                for r in rows
            ],
        ),
    )
