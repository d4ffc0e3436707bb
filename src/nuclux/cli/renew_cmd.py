"""``nuclux renew``: extend the account's storage leases that end soon, within a spending cap.

The cap is ``--max-spend`` for this call and the configuration's ``renew_budget``, a running
budget counted across calls and the repair watcher (``cli/renewal_config.py``); with neither,
nothing is renewed and the command says so. ``--dry-run`` shows what would be renewed and
what it would cost, and sends nothing. The exit code is 0 when every lease holding data that
ends within the window was renewed (or is waiting for its provider), 1 otherwise: the files
on the others are at risk (`nuclux repair` moves data off draining or unreachable providers).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

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
from nuclux.cli.storage import _keys, _using
from nuclux.core.types import format_nux
from nuclux.errors import UsageError
from nuclux.sdk.renewal import RenewalIncomplete, RenewalReport


def renew_cmd(
    ctx: typer.Context,
    days: Annotated[
        float | None,
        typer.Option(help="Extend each lease by this many days (default 30).", show_default=False),
    ] = None,
    max_spend: Annotated[
        str | None,
        typer.Option("--max-spend", help="The most this call may commit, in NUX (e.g. 5 or 0.25)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be renewed; send nothing.")
    ] = False,
    account: AccountOpt = None,
    private_key_env: KeyEnvOpt = None,
    deployment: DeploymentOpt = None,
    json: JsonFlag = False,
) -> None:
    """Renew leases that end soon (their providers keep the data), within a spending cap."""
    c = command_ctx(ctx, json=json)
    cap = None if max_spend is None else nux_arg(max_spend, "--max-spend")
    if days is not None and not 0 < days < 36_500:
        raise UsageError(f"--days must be a positive number of days, not {days:g}")
    keys = _keys(c, account, private_key_env)
    report: RenewalReport = _using(
        c,
        keys,
        deployment,
        lambda client: client.renew(days=days, max_spend=cap, dry_run=dry_run),
    )
    data = report_json(report)
    emit(c, data, lambda: render_renewal(report))
    if report.at_risk:
        files = len(report.files_at_risk)
        raise RenewalIncomplete(
            f"{len(report.at_risk)} lease(s) holding data end within {report.window_days:g}"
            f" days and were not renewed; {files} file(s) at risk (see the reasons above)"
        )


def report_json(r: RenewalReport) -> dict[str, Any]:
    """The report as JSON (amounts in wei, times as chain time in seconds)."""
    return {
        "dry_run": r.dry_run,
        "window_days": r.window_days,
        "days": r.days,
        "spent_wei": r.spent,
        "allowance_wei": r.allowance,
        "budget_wei": r.budget,
        "budget_spent_wei": r.budget_spent,
        "renewed": [
            {
                "lease": x.lease_id,
                "provider": x.provider,
                "old_end": x.old_end,
                "new_end": x.new_end,
                "epochs": x.epochs,
                "cost_wei": x.cost,
                "status": x.status,
            }
            for x in r.renewed
        ],
        "skipped": [
            {
                "lease": s.lease_id,
                "provider": s.provider,
                "ends_at": s.ends_at,
                "reason": s.reason,
                "at_risk": s.at_risk,
                "cost_wei": s.cost,
                "files": [str(f) for f in s.files],
            }
            for s in r.skipped
        ],
        "files_at_risk": [str(f) for f in r.files_at_risk],
    }


def _date(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


def _nux(wei: int | None) -> str:
    return "-" if wei is None else f"{format_nux(wei)} NUX"


def render_renewal(r: RenewalReport) -> None:
    out = stdout_console()
    if not r.renewed and not r.skipped:
        out.print(f"no lease ends within {r.window_days:g} days: nothing to renew")
    if r.renewed:
        table(
            "Would renew (dry run)" if r.dry_run else "Renewed",
            ["lease", "provider", "old end", "new end", "cost", "status"],
            [
                (x.lease_id, x.provider, _date(x.old_end), _date(x.new_end), _nux(x.cost), x.status)
                for x in r.renewed
            ],
        )
    if r.skipped:
        out.print("Not renewed:")
        for s in r.skipped:
            files = f" [{len(s.files)} file(s) at risk]" if s.files else ""
            out.print(
                f"  lease {s.lease_id} of {s.provider}, ends {_date(s.ends_at)}: {s.reason}{files}",
                markup=False,
                soft_wrap=True,
            )
    budget = None if r.budget is None else f"{_nux(r.budget_spent)} of {_nux(r.budget)} spent"
    show_fields(
        [
            ("would spend" if r.dry_run else "spent", _nux(r.spent)),
            ("cap for this call", "none set" if r.allowance is None else _nux(r.allowance)),
            ("renewal budget", budget or "not set (config key renew_budget)"),
        ]
    )
    for f in r.files_at_risk:
        out.print(f"at risk: {f}", markup=False, soft_wrap=True)
