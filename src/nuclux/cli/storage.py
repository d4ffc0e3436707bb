"""``nuclux put|get|ls|rm|share|audit|verify-timestamp``: files on Nuclux from the command line.

Every command signs as one account (``--account`` from the keystore, or a raw key from
``--private-key-env`` on a devnet) and talks to the chain of the current deployment and to
providers directly. Data goes to stdout (the reference, the grant, tables, or ``--json``);
progress bars and warnings go to stderr, and only when it is a terminal. Errors are one line
with the exit codes of ``nuclux.errors`` (a missing file or bad argument 2, a tampered grant or
wrong key 6, a grant for someone else 8, too few providers 1).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from eth_account import Account
from eth_account.signers.local import LocalAccount
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from nuclux.cli.chain_cmd import AccountOpt, DeploymentOpt, KeyEnvOpt, NoMarketOpt
from nuclux.cli.keys_cmd import unlock_account
from nuclux.cli.output import (
    Ctx,
    JsonFlag,
    command_ctx,
    emit,
    nux_arg,
    records_table,
    stderr_console,
    stdout_console,
)
from nuclux.cli.output import table as print_table
from nuclux.cli.renewal_config import storage_settings
from nuclux.cli.session import ledger_session
from nuclux.core.reference import parse_reference
from nuclux.core.units import format_size
from nuclux.errors import IntegrityError, NucluxError, UsageError
from nuclux.keys.derive import AccountKeys, from_private_key, parse_private_key_hex
from nuclux.sdk import FileEntry, GetResult, StorageClient

RefArg = Annotated[str, typer.Argument(help="File reference (nux:...).")]


def _keys(c: Ctx, account: str | None, key_env: str | None) -> AccountKeys:
    """The account's keys: a raw key from ``$key_env`` (devnets) or a keystore account."""
    if key_env:
        text = os.environ.get(key_env, c.env.get(key_env, ""))
        if not text:
            raise UsageError(f"environment variable {key_env} is empty or unset")
        return from_private_key(parse_private_key_hex(text))
    return unlock_account(c, account)


T = TypeVar("T")


@asynccontextmanager
async def storage_client(
    c: Ctx, keys: AccountKeys, deployment: Path | None, *, market: bool = True
) -> AsyncIterator[StorageClient]:
    """A ``StorageClient`` for the command; its index changes are flushed on success.
    ``market`` False opens new leases at posted prices (``--no-market``)."""
    acct: LocalAccount = Account.from_key(keys.eth_private_key)
    async with ledger_session(c, acct, deployment) as ledger:
        client = StorageClient(ledger, keys, storage_settings(c, ledger, market=market))
        async with client:
            yield client
        for warning in client.warnings:  # stored, but something is owed (a time-stamp...)
            stderr_console().print(f"warning: {warning}", markup=False, soft_wrap=True)


@contextmanager
def progress_bar(c: Ctx, label: str) -> Iterator[Callable[[int, int], None] | None]:
    """A transfer bar with throughput on stderr, if it is a terminal and not ``--json``."""
    console = stderr_console()
    if c.json or not console.is_terminal:
        yield None
        return
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    task = bar.add_task(label, total=None)
    with bar:
        yield lambda done, total: bar.update(task, completed=done, total=total)


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def _using(
    c: Ctx, keys: AccountKeys, deployment: Path | None, use: Callable[[StorageClient], Awaitable[T]]
) -> T:
    """Run one request on a command's ``StorageClient`` (opened, used, flushed, closed)."""

    async def go() -> T:
        async with storage_client(c, keys, deployment) as client:
            return await use(client)

    return asyncio.run(go())


def put_cmd(
    ctx: typer.Context,
    files: Annotated[
        list[Path], typer.Argument(help="The file(s) to store, each under its own reference.")
    ],
    k: Annotated[int | None, typer.Option("--k", help="Shares needed to read it.", min=1)] = None,
    n: Annotated[int | None, typer.Option("--n", help="Shares stored (providers).", min=2)] = None,
    days: Annotated[float | None, typer.Option(help="Storage term in days (default 30).")] = None,
    max_price: Annotated[
        str | None,
        typer.Option(
            help="Highest price per storage unit and epoch, e.g. 0.002: the auction's reserve"
            " (default: twice the market's reference price, else the highest posted price)."
        ),
    ] = None,
    name: Annotated[
        str | None, typer.Option(help="Name to store (default: the file's; one file only).")
    ] = None,
    no_market: NoMarketOpt = False,
    account: AccountOpt = None,
    private_key_env: KeyEnvOpt = None,
    deployment: DeploymentOpt = None,
    json: JsonFlag = False,
) -> None:
    """Store files (encrypted, erasure-coded across providers); prints each one's reference.

    Several files in one command share its start-up and one update of the file index."""
    c = command_ctx(ctx, json=json)
    cap = None if max_price is None else nux_arg(max_price, "--max-price")
    for file in files:  # all checked before anything is stored
        if not file.is_file():
            raise UsageError(
                f"{file}: no such file" if not file.exists() else f"{file}: not a file"
            )
    if name is not None and len(files) > 1:
        raise UsageError("--name names one file; give one file, or leave --name out")
    keys = _keys(c, account, private_key_env)
    several = len(files) > 1
    out = stdout_console()
    stored: list[dict[str, Any]] = []

    async def go() -> None:
        async with storage_client(c, keys, deployment, market=not no_market) as client:
            try:
                for file in files:
                    with progress_bar(c, f"put {file.name}") as progress:
                        ref = await client.put(
                            file, k=k, n=n, days=days, max_price=cap, name=name, progress=progress
                        )
                    stored.append(
                        {
                            "reference": str(ref),
                            "name": file.name if name is None else name,
                            "size": file.stat().st_size,
                        }
                    )
                    if several and not c.json:  # each as it is stored: a failure keeps these
                        out.print(f"{ref}  {file}", soft_wrap=True, markup=False)
            finally:
                await _flush_index(client, stored)
            for record in stored:
                record["transactions"] = client.transactions

    _run(go())
    if several:
        emit(c, stored, lambda: None)
    else:
        data = stored[0]
        emit(c, data, lambda: out.print(data["reference"], soft_wrap=True))


async def _flush_index(client: StorageClient, stored: list[dict[str, Any]]) -> None:
    """The file index and time-stamps of what was stored: a failure here must not hide the
    files, so their references are printed with it."""
    if not stored:
        return
    try:
        await client.flush()
    except NucluxError:
        refs = ", ".join(r["reference"] for r in stored)
        stderr_console().print(
            f"stored as {refs}, but the account's file index was not updated (below):"
            " `nuclux get REF` reads each file; `nuclux ls` will not show them",
            markup=False,
            soft_wrap=True,
        )
        raise


def get_cmd(
    ctx: typer.Context,
    targets: Annotated[
        list[str],
        typer.Argument(metavar="TARGET...", help="References (nux:...) or grants (nuxgrant1...)."),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "-o",
            "--out",
            help="Output file or directory (default: here; a directory for several files).",
        ),
    ] = Path("."),
    account: AccountOpt = None,
    private_key_env: KeyEnvOpt = None,
    deployment: DeploymentOpt = None,
    json: JsonFlag = False,
) -> None:
    """Read files: yours by reference, or someone else's with a grant they gave you."""
    c = command_ctx(ctx, json=json)
    if len(targets) > 1 and not out.is_dir():
        raise UsageError(f"{out}: several files are written into a directory, and this is not one")
    keys = _keys(c, account, private_key_env)
    results: list[dict[str, Any]] = []

    async def go() -> None:
        async with storage_client(c, keys, deployment) as client:
            for target in targets:
                with progress_bar(c, "get") as progress:
                    got = await client.get(target, out, progress=progress)
                results.append(_got(got))
                if not c.json:
                    stdout_console().print(f"wrote {got.path} ({format_size(got.size)})")

    _run(go())
    emit(c, results if len(targets) > 1 else results[0], lambda: None)


def _got(got: GetResult) -> dict[str, Any]:
    """What a get wrote, with a warning per corrupt block it read around."""
    for f in got.corrupt:
        stderr_console().print(
            f"warning: provider {f.provider} served a corrupt block (share {f.share},"
            f" segment {f.segment}); it was read from another provider",
            markup=False,
            soft_wrap=True,
        )
    return {
        "reference": str(got.reference),
        "path": str(got.path),
        "size": got.size,
        "name": got.name,
        "manifest_version": got.version,
        "corrupt": [
            {"share": f.share, "provider": f.provider, "segment": f.segment} for f in got.corrupt
        ],
        "unavailable": sorted({f.provider for f in got.unavailable}),
    }


def _entry_json(e: FileEntry) -> dict[str, Any]:
    return {
        "reference": str(e.reference),
        "name": e.name,
        "size": e.size,
        "created_at": e.created_at,
        "manifest_version": e.version,
        "healthy": e.healthy,
        "total": e.total,
        "needed": e.needed,
        "status": e.status,
        "expires_at": e.expires_at,
        "at_risk": e.at_risk,
        "risk": e.risk,
    }


def ls_cmd(
    ctx: typer.Context,
    pattern: Annotated[
        str | None,
        typer.Argument(
            metavar="PATTERN",
            help="Only files whose name matches this shell pattern (*, ?, [...]; quote it).",
            show_default=False,
        ),
    ] = None,
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="Probe every provider for health.")
    ] = True,
    account: AccountOpt = None,
    private_key_env: KeyEnvOpt = None,
    deployment: DeploymentOpt = None,
    json: JsonFlag = False,
) -> None:
    """List your files and their health (shares reachable of those stored)."""
    c = command_ctx(ctx, json=json)
    keys = _keys(c, account, private_key_env)

    entries = _using(c, keys, deployment, lambda client: client.ls(check=check, match=pattern))

    def render() -> None:
        if not entries:
            stdout_console().print("no files" if pattern is None else f"no files match {pattern}")
            return
        records_table(
            "Files",
            ["reference", "name", "size", "stored", "lease ends", "health"],
            [
                (
                    str(e.reference),
                    e.name,
                    format_size(e.size),
                    _date(e.created_at),
                    None if e.expires_at is None else _date(e.expires_at),
                    _health(e),
                )
                for e in entries
            ],
        )

    emit(c, [_entry_json(e) for e in entries], render)


def _date(t: int) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M")


def _health(e: FileEntry) -> str:
    if e.at_risk:
        return f"AT RISK: {e.risk or e.status}" + (
            f" ({e.status}, {e.healthy}/{e.total}, needs {e.needed})" if e.total is not None else ""
        )
    if e.total is not None:
        return f"{e.status} ({e.healthy}/{e.total}, needs {e.needed})"
    if e.healthy is not None:
        return f"{e.healthy} shares when stored"
    return e.status


def rm_cmd(
    ctx: typer.Context,
    refs: Annotated[list[str], typer.Argument(metavar="REF", help="File references (nux:...).")],
    account: AccountOpt = None,
    private_key_env: KeyEnvOpt = None,
    deployment: DeploymentOpt = None,
    json: JsonFlag = False,
) -> None:
    """Delete files from their providers and your file index."""
    c = command_ctx(ctx, json=json)
    parsed = [parse_reference(r) for r in refs]  # all checked before anything is removed
    keys = _keys(c, account, private_key_env)
    done: list[dict[str, Any]] = []

    async def go() -> None:
        async with storage_client(c, keys, deployment) as client:
            for ref in parsed:
                res = await client.rm(ref)
                done.append(
                    {
                        "reference": str(res.reference),
                        "deleted": res.deleted,
                        "problems": list(res.problems),
                    }
                )
                for problem in res.problems:
                    stderr_console().print(f"warning: {problem}", markup=False, soft_wrap=True)
                if not c.json:
                    stdout_console().print(f"removed {res.reference}", soft_wrap=True)

    _run(go())
    if any(d["problems"] for d in done):  # recorded as leftovers (nuclux.sdk.leftovers)
        stderr_console().print(
            "warning: what those providers still hold is removed by a later `nuclux repair"
            " --all` once they answer",
            markup=False,
            soft_wrap=True,
        )
    emit(c, done if len(parsed) > 1 else done[0], lambda: None)


def share_cmd(
    ctx: typer.Context,
    ref: RefArg,
    to: Annotated[str, typer.Option("--to", help="The address that may read the file.")],
    days: Annotated[float, typer.Option(help="How long the grant lasts.")] = 7.0,
    account: AccountOpt = None,
    private_key_env: KeyEnvOpt = None,
    deployment: DeploymentOpt = None,
    json: JsonFlag = False,
) -> None:
    """Let one address read one file: prints a grant to hand over (`nuclux get GRANT`)."""
    c = command_ctx(ctx, json=json)
    keys = _keys(c, account, private_key_env)

    grant = _using(c, keys, deployment, lambda client: client.share(ref, to, days=days))
    data = {"reference": ref.strip(), "to": to, "days": days, "grant": grant}
    emit(c, data, lambda: stdout_console().print(grant, soft_wrap=True))


def audit_cmd(
    ctx: typer.Context,
    ref: RefArg,
    account: AccountOpt = None,
    private_key_env: KeyEnvOpt = None,
    deployment: DeploymentOpt = None,
    json: JsonFlag = False,
) -> None:
    """Check every provider's share of a file now (sampled blocks; no transaction)."""
    c = command_ctx(ctx, json=json)
    keys = _keys(c, account, private_key_env)

    report = _using(c, keys, deployment, lambda client: client.audit(ref))
    data = {
        "reference": str(report.reference),
        "ok": report.ok,
        "packed": report.packed,
        "segments": list(report.segments),
        "providers": [
            {
                "share": s.share,
                "provider": s.provider,
                "lease": s.lease_id,
                "status": s.status,
                "checked": s.checked,
                "detail": s.detail,
            }
            for s in report.shares
        ],
    }
    what = "copy" if report.packed else "share"
    emit(
        c,
        data,
        lambda: print_table(
            f"Audit of {report.reference}",
            [what, "provider", "lease", "status", "blocks checked", "detail"],
            [
                (s.share, s.provider, s.lease_id, s.status, s.checked, s.detail)
                for s in report.shares
            ],
        ),
    )
    if not report.ok:
        bad = [f"{s.provider} ({s.status})" for s in report.shares if s.status != "ok"]
        raise IntegrityError(f"audit found problems: {', '.join(bad)}")


def verify_timestamp_cmd(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="The local file to check.")],
    target: Annotated[str, typer.Argument(help="Its reference (nux:...) or a grant.")],
    account: AccountOpt = None,
    private_key_env: KeyEnvOpt = None,
    deployment: DeploymentOpt = None,
    json: JsonFlag = False,
) -> None:
    """Prove FILE is the file a reference names, and since when (the anchoring block)."""
    c = command_ctx(ctx, json=json)
    keys = _keys(c, account, private_key_env)

    ts = _using(c, keys, deployment, lambda client: client.verify_timestamp(file, target))
    when = datetime.fromtimestamp(ts.time, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    data = {
        "reference": str(ts.reference),
        "manifest_version": ts.version,
        "manifest_digest": ts.digest.hex(),
        "anchor_root": ts.root.hex(),
        "time": ts.time,
        "block": ts.block,
    }
    emit(
        c,
        data,
        lambda: stdout_console().print(
            f"{file} is version {ts.version} of {ts.reference}, time-stamped {when}"
            f" (block {ts.block})",
            markup=False,
            soft_wrap=True,
        ),
    )


def register(app: typer.Typer) -> None:
    """Add the storage commands to the root app."""
    app.command("put")(put_cmd)
    app.command("get")(get_cmd)
    app.command("ls")(ls_cmd)
    app.command("rm")(rm_cmd)
    app.command("share")(share_cmd)
    app.command("audit")(audit_cmd)
    app.command("verify-timestamp")(verify_timestamp_cmd)
