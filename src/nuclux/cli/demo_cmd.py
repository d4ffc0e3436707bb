"""``nuclux demo``: the lease lifecycle on the embedded chain, summarised."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import typer

from nuclux.cli.output import JsonFlag, command_ctx, emit, stdout_console, table
from nuclux.core.types import format_nux

if TYPE_CHECKING:  # the demo (and the node it runs) is imported when it runs, not at start-up
    from nuclux.demo import DemoSummary


def demo_cmd(ctx: typer.Context, json: JsonFlag = False) -> None:
    """Run the demo: deploy, register providers, lease, claim, extend, settle."""
    from nuclux.demo import run_demo

    c = command_ctx(ctx, json=json)
    console = stdout_console()
    say = (lambda _m: None) if json else (lambda m: console.print(f"[green]•[/green] {m}"))
    summary = asyncio.run(run_demo(say))
    emit(c, summary.to_json(), lambda: _render(summary))


def _render(s: DemoSummary) -> None:
    table(
        "Balances (NUX)",
        ["holder", "balance"],
        [(name, format_nux(wei)) for name, wei in s.balances.items()],
    )
    table(
        "Leases",
        ["id", "class", "state", "units", "epochs", "price/unit", "paid"],
        [
            (
                x["id"],
                x["class"],
                x["state"],
                x["units"],
                x["epochs"],
                format_nux(x["price_wei"]),
                format_nux(x["paid_wei"]),
            )
            for x in s.leases
        ],
    )
    total = sum(s.balances.values())
    stdout_console().print(
        f"total supply {format_nux(s.supply)} NUX; held by the holders above "
        f"{format_nux(total)} NUX: {'conserved' if total == s.supply else 'NOT conserved'}"
    )
