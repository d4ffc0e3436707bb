"""``nuclux repair REF|--all [--watch]``: rebuild lost shares of stored files.

One file by reference, or every file of the account's index with ``--all``: each share is
checked (its provider answers and holds it intact, is not draining, its lease lasts the file's
term, it is not suspect on chain), the bad ones are rebuilt from any k healthy ones onto other
providers and a new manifest version is published. A file needing nothing costs nothing.
``--watch`` repeats this every ``--interval`` seconds until Ctrl-C (or SIGTERM), which ends it
after the round in progress, with exit code 0; watching all files, each round first renews
the leases about to end (``nuclux renew`` within the configured ``renew_budget``; without one
it renews nothing and says which leases are at risk).

Output: a line per file (``--json``: one object for REF, a list for ``--all``, one JSON line
per round with ``--watch``). A file that cannot be repaired exits non-zero (after the others
were tried and the index written): ``NotEnoughShares`` and ``NotEnoughProviders`` exit 1. So
does a file repaired only in part (fewer other providers than bad shares: those there are
take the lost shares first, and the new version is published), after its line is printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json as jsonlib
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

from nuclux.cli.chain_cmd import AccountOpt, DeploymentOpt, KeyEnvOpt
from nuclux.cli.output import (
    Ctx,
    JsonFlag,
    command_ctx,
    emit,
    nux_arg,
    stderr_console,
    stdout_console,
)
from nuclux.cli.renew_cmd import render_renewal, report_json
from nuclux.cli.storage import _keys, storage_client
from nuclux.core.reference import Reference
from nuclux.errors import NucluxError, UsageError
from nuclux.keys.derive import AccountKeys
from nuclux.sdk.repair import Outcome, RepairFailure, RepairReport, as_reference


def outcome_json(o: Outcome) -> dict[str, Any]:
    if isinstance(o, RepairFailure):
        ref = None if o.reference is None else str(o.reference)
        return {"reference": ref, "ok": False, "error": o.error}
    return {
        "reference": str(o.reference),
        "ok": not o.unrepaired,  # every bad share (copy) was rebuilt
        "packed": o.packed,
        "nothing_to_do": o.nothing_to_do,
        "version": o.version,
        "new_version": o.new_version,
        "shares_checked": len(o.shares),
        "bad": [
            {
                "share": s.share,
                "provider": s.provider,
                "lease": s.lease_id,
                "reasons": list(s.problems),
            }
            for s in o.bad
        ],
        "moved": [
            {
                "share": m.share,
                "from_provider": m.old_provider,
                "from_lease": m.old_lease,
                "provider": m.provider,
                "lease": m.lease_id,
                "committed": m.committed,
            }
            for m in o.moved
        ],
        "unrepaired": [s.share for s in o.unrepaired],
        "leftovers_removed": o.swept,
        "problems": list(o.problems),
    }


def outcome_line(o: Outcome) -> str:
    if isinstance(o, RepairFailure):
        return f"{o.reference or 'repair round'}: not repaired: {o.error}"
    return _report_line(o)


def _report_line(r: RepairReport) -> str:
    what = "copies" if r.packed else "shares"
    healthy = len(r.shares) - len(r.bad)
    swept = f"; removed {_count(r.swept, 'leftover')} of earlier repairs" if r.swept else ""
    if r.nothing_to_do:
        return f"{r.reference}: nothing to do ({healthy}/{len(r.shares)} {what} healthy){swept}"
    bad = "; ".join(f"{s.share} on {s.provider}: {s.reason}" for s in r.bad)
    moved = ", ".join(f"{m.share} -> {m.provider} (lease {m.lease_id})" for m in r.moved)
    version = (
        f"manifest version {r.new_version}"
        if r.new_version is not None
        else f"manifest version {r.version} kept"
    )
    line = f"{r.reference}: {len(r.bad)} bad {what} ({bad}); rebuilt {moved or 'none'}; {version}"
    if r.problems:
        line += f"; left behind: {'; '.join(r.problems)}"
    return line + swept


def _failed(outcomes: list[Outcome]) -> NucluxError | None:
    failures = [o for o in outcomes if isinstance(o, RepairFailure)]
    partly = [o for o in outcomes if isinstance(o, RepairReport) and o.unrepaired]
    if not failures and not partly:
        return None
    if len(outcomes) == 1 and partly:
        left = partly[0].unrepaired
        nouns = ("bad copy", "bad copies") if partly[0].packed else ("bad share", "bad shares")
        return NucluxError(
            f"{_count(len(left), *nouns)} of {partly[0].reference} could not be rebuilt"
            f" ({', '.join(str(s.share) for s in left)}): run `nuclux repair` again when"
            " more providers can take them"
        )
    named: list[Outcome] = [*failures, *partly]
    names = ", ".join(str(o.reference) for o in named[:5])
    return NucluxError(
        f"{len(failures)} of {len(outcomes)} files could not be repaired"
        + (f" and {len(partly)} only in part" if partly else "")
        + f" ({names})"
    )


def print_warnings(warnings: list[str]) -> None:
    """Print ``warnings`` on stderr and forget them (a watch round's, as it ends)."""
    for warning in warnings:
        stderr_console().print(f"warning: {warning}", markup=False, soft_wrap=True)
    warnings.clear()


def _print(outcomes: list[Outcome], elsewhere: int = 0) -> None:
    console = stdout_console()
    for o in outcomes:
        console.print(outcome_line(o), markup=False, soft_wrap=True)
    if elsewhere:
        console.print(
            f"removed {_count(elsewhere, 'leftover')} of files removed earlier", soft_wrap=True
        )


def _count(n: int, one: str, many: str | None = None) -> str:
    """``1 share``, ``2 shares`` (``many``: the plural when it is not ``one`` + s)."""
    return f"{n} {one if n == 1 else many or one + 's'}"


def repair_cmd(
    ctx: typer.Context,
    ref: Annotated[str | None, typer.Argument(help="File reference (nux:...).")] = None,
    all_files: Annotated[
        bool, typer.Option("--all", help="Every file of the account's index.")
    ] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Repeat in rounds until interrupted (Ctrl-C).")
    ] = False,
    interval: Annotated[float, typer.Option(help="Seconds between --watch rounds.", min=0)] = 600.0,
    max_price: Annotated[
        str | None, typer.Option(help="Highest price per storage unit and epoch, e.g. 0.002.")
    ] = None,
    account: AccountOpt = None,
    private_key_env: KeyEnvOpt = None,
    deployment: DeploymentOpt = None,
    json: JsonFlag = False,
) -> None:
    """Rebuild a file's lost shares (REF) or every file's (--all) onto other providers."""
    c = command_ctx(ctx, json=json)
    if ref is not None and all_files:
        raise UsageError("give a file reference or --all, not both")
    if ref is None and not all_files:
        raise UsageError("give a file reference (nux:...) or --all")
    reference = None if ref is None else as_reference(ref)
    cap = None if max_price is None else nux_arg(max_price, "--max-price")
    keys = _keys(c, account, private_key_env)
    if watch:
        _watch(c, keys, deployment, reference, interval, cap)
        return
    outcomes, elsewhere = asyncio.run(_once(c, keys, deployment, reference, cap))
    if reference is not None:  # a failure was raised as itself, with its exit code
        emit(c, outcome_json(outcomes[0]), lambda: _print(outcomes))
    else:
        emit(c, [outcome_json(o) for o in outcomes], lambda: _print(outcomes, elsewhere))
    failed = _failed(outcomes)
    if failed is not None:
        raise failed


async def _once(
    c: Ctx, keys: AccountKeys, deployment: Path | None, ref: Reference | None, cap: int | None
) -> tuple[list[Outcome], int]:
    """The outcomes, and how many leftovers of files no longer in the index were removed."""
    async with storage_client(c, keys, deployment) as client:
        if ref is not None:
            return [await client.repair(ref, max_price=cap)], 0
        outcomes = await client.repair_all(max_price=cap)
        listed = sum(o.swept for o in outcomes if isinstance(o, RepairReport))
        return outcomes, sum(client.ctx.swept.values()) - listed


def _watch(
    c: Ctx,
    keys: AccountKeys,
    deployment: Path | None,
    ref: Reference | None,
    interval: float,
    cap: int | None,
) -> None:
    def show(round_no: int, outcomes: list[Outcome]) -> None:
        if c.json:
            line = {"round": round_no, "files": [outcome_json(o) for o in outcomes]}
            typer.echo(jsonlib.dumps(line, sort_keys=True))
            return
        stdout_console().print(f"round {round_no}:", markup=False)
        _print(outcomes)

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            async with storage_client(c, keys, deployment) as client:

                async def renew() -> None:
                    # unattended: only within the configured renew_budget (none: renews nothing)
                    report = await client.renew()
                    if c.json:
                        typer.echo(jsonlib.dumps({"renewal": report_json(report)}, sort_keys=True))
                    elif report.renewed or report.at_risk:
                        render_renewal(report)

                def shown(round_no: int, outcomes: list[Outcome]) -> None:
                    show(round_no, outcomes)
                    print_warnings(client.warnings)  # now, not when the watch ends

                await client.repair_watch(
                    interval=interval,
                    ref=ref,
                    stop=stop,
                    on_round=shown,
                    max_price=cap,
                    renew=renew if ref is None else None,
                )
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    with contextlib.suppress(KeyboardInterrupt):  # interrupted before the handlers were set
        asyncio.run(go())
