"""``nuclux run`` and ``nuclux jobs``: WASI jobs on Nuclux compute providers.

``nuclux run MODULE.wasm [options] -- ARGS...`` runs one job, prints its stdout (its stderr
to stderr), writes its outputs into ``--output-dir`` (default: here) and never over an
existing file unless ``--force`` (a clashing output is written beside it under a suffix), and
exits non-zero (9) with the job's message when the job did not exit 0. ``--input`` takes a
local file or a Nuclux reference (read with the storage client); the job sees it as
``/in/<name>``. ``--map 'GLOB'`` runs one job per matched file instead (the file is the job's
only input, under its own name), in parallel across providers, with a progress bar and a
summary; each job's outputs, and its stdout as ``stdout``, go to ``--output-dir/<input>/``.

``nuclux jobs`` lists the account's jobs from its local journal
(``<data dir>/jobs/<chain>-<lease manager>-<account>.jsonl``).

Every argument is checked before anything is paid: a missing or non-wasm module,
``--replicas 0``, a bad fuel amount, size, duration or price, an unmatched glob, an input
name a job cannot have.
"""

from __future__ import annotations

import asyncio
import glob
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from eth_account import Account
from eth_account.signers.local import LocalAccount

from nuclux.cli.chain_cmd import AccountOpt, DeploymentOpt, KeyEnvOpt, NoMarketOpt
from nuclux.cli.compute_out import (
    jobs_table,
    map_bar,
    map_item_json,
    outcome_json,
    write_outputs,
)
from nuclux.cli.output import Ctx, JsonFlag, command_ctx, emit, nux_arg, show_fields
from nuclux.cli.output import stderr_console as err_console
from nuclux.cli.session import ledger_session, load_deployment
from nuclux.cli.storage import _keys, storage_client
from nuclux.core.job import JobFailed, JobLimits, check_module, check_name
from nuclux.core.units import parse_duration, parse_size
from nuclux.errors import NucluxError, UsageError
from nuclux.keys.derive import AccountKeys
from nuclux.sdk import ComputeClient, ComputeSettings
from nuclux.sdk.compute import JobOutcome
from nuclux.sdk.compute.journal import journal_path, read_journal


@dataclass(frozen=True, slots=True)
class _Job:
    """A checked ``nuclux run``: what to run, with what, where results go."""

    module: bytes
    name: str
    args: list[str]
    replicas: int
    limits: JobLimits
    max_price: int | None
    out_dir: Path
    force: bool
    market: bool = True  # new leases at auction (False: --no-market, posted prices)


def _fuel(text: str) -> int:
    t = text.strip().lower().replace("_", "")
    try:
        value = int(t) if "e" not in t else int(float(t))
        if "e" in t and float(t) != value:
            raise ValueError(t)
    except (ValueError, OverflowError):
        raise UsageError(
            f"--fuel: {text!r} is not a whole amount of fuel (e.g. 10000000000 or 1e10)"
        ) from None
    return value


def _limits(fuel: str | None, memory: str | None, timeout: str | None) -> JobLimits:
    base = JobLimits()
    try:
        mem = base.memory_bytes if memory is None else parse_size(memory)
    except ValueError as err:
        raise UsageError(f"--memory: {err}") from None
    try:
        ms = base.timeout_ms if timeout is None else parse_duration(timeout) * 1000
    except ValueError as err:
        raise UsageError(f"--timeout: {err}") from None
    f = base.fuel if fuel is None else _fuel(fuel)
    return JobLimits(
        fuel=f,
        memory_bytes=mem,
        timeout_ms=ms,
        stdout_bytes=base.stdout_bytes,
        stderr_bytes=base.stderr_bytes,
        output_bytes=base.output_bytes,
        scratch_bytes=base.scratch_bytes,
    )


def _module(path: Path) -> bytes:
    if not path.exists():
        raise UsageError(f"{path}: no such module file")
    if not path.is_file():
        raise UsageError(f"{path}: not a file")
    code = path.read_bytes()
    try:
        check_module(code)
    except NucluxError as err:
        raise UsageError(f"{path}: {err}") from None
    return code


def _input_name(path: str) -> str:
    return check_name(Path(path).name, "input")


def _local_inputs(given: list[str]) -> tuple[dict[str, bytes], list[str]]:
    """Local files read now (name -> bytes), and the references to fetch later."""
    local: dict[str, bytes] = {}
    refs: list[str] = []
    for spec in given:
        if spec.startswith("nux:"):
            refs.append(spec)
            continue
        path = Path(spec)
        if not path.is_file():
            raise UsageError(f"--input {spec}: no such file (nor a nux: reference)")
        name = _input_name(spec)
        if name in local:
            raise UsageError(f"--input {spec}: two inputs are named {name}")
        local[name] = path.read_bytes()
    return local, refs


async def _fetch(
    c: Ctx, keys: AccountKeys, deployment: Path | None, refs: list[str]
) -> dict[str, bytes]:
    """The referenced files, read with the storage client (name -> bytes)."""
    out: dict[str, bytes] = {}
    if not refs:
        return out
    with tempfile.TemporaryDirectory(prefix="nuclux-inputs-") as tmp:
        async with storage_client(c, keys, deployment) as storage:
            for i, ref in enumerate(refs):
                where = Path(tmp) / str(i)
                where.mkdir()
                got = await storage.get(ref, where)
                name = _input_name(got.name)
                if name in out:
                    raise UsageError(f"--input {ref}: two inputs are named {name}")
                out[name] = await asyncio.to_thread(Path(got.path).read_bytes)
    return out


@asynccontextmanager
async def _compute(
    c: Ctx, keys: AccountKeys, deployment: Path | None, market: bool = True
) -> AsyncIterator[ComputeClient]:
    acct: LocalAccount = Account.from_key(keys.eth_private_key)
    async with ledger_session(c, acct, deployment) as ledger:
        settings = ComputeSettings(
            journal_dir=c.config.data_dir / "jobs", use_market=market and c.config.market
        )
        async with ComputeClient(ledger, keys, settings) as client:
            yield client


def run_cmd(
    ctx: typer.Context,
    module: Annotated[Path, typer.Argument(help="The WASI module (.wasm) to run.")],
    args: Annotated[
        list[str] | None, typer.Argument(help="The job's arguments (after --).")
    ] = None,
    replicas: Annotated[
        int, typer.Option(help="Providers to run it on; >= 2 accepts the majority's result.")
    ] = 1,
    fuel: Annotated[str | None, typer.Option(help="Fuel limit (default 1e10).")] = None,
    memory: Annotated[str | None, typer.Option(help="Memory limit (default 256MiB).")] = None,
    timeout: Annotated[str | None, typer.Option(help="Wall-clock limit (default 60s).")] = None,
    inputs: Annotated[
        list[str] | None,
        typer.Option("--input", "-i", help="An input: a local file or a nux: reference."),
    ] = None,
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", "-o", help="Where outputs go (default: here).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite existing files.")] = False,
    map_glob: Annotated[
        str | None, typer.Option("--map", help="One job per file matching this glob (quote it).")
    ] = None,
    max_price: Annotated[
        str | None,
        typer.Option(
            help="Highest price per million fuel in NUX, e.g. 0.001: the auction's reserve"
            " for new leases (default: twice the reference price, else the highest posted)."
        ),
    ] = None,
    no_market: NoMarketOpt = False,
    account: AccountOpt = None,
    private_key_env: KeyEnvOpt = None,
    deployment: DeploymentOpt = None,
    json: JsonFlag = False,
) -> None:
    """Run a WASI job on Nuclux providers: prints its stdout, writes its outputs."""
    c = command_ctx(ctx, json=json)
    if replicas < 1:
        raise UsageError(f"--replicas must be at least 1, not {replicas}")
    out_dir = Path(".") if output_dir is None else output_dir
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--output-dir {out_dir}: not a directory")
    job = _Job(
        module=_module(module),
        name=module.name,
        args=list(args or []),
        replicas=replicas,
        limits=_limits(fuel, memory, timeout),
        max_price=None if max_price is None else nux_arg(max_price, "--max-price"),
        out_dir=out_dir,
        force=force,
        market=not no_market,
    )
    if map_glob is not None:
        if inputs:
            raise UsageError("--map runs one job per matched file; it takes no --input")
        items = _map_inputs(map_glob)
        _run_map(c, job, items, _keys(c, account, private_key_env), deployment)
        return
    local, refs = _local_inputs(list(inputs or []))
    _run_one(c, job, local, refs, _keys(c, account, private_key_env), deployment)


def _run_one(
    c: Ctx,
    job: _Job,
    local: dict[str, bytes],
    refs: list[str],
    keys: AccountKeys,
    deployment: Path | None,
) -> None:
    async def go() -> tuple[JobOutcome, list[Path], list[str]]:
        fetched = await _fetch(c, keys, deployment, refs)
        clash = sorted(set(fetched) & set(local))
        if clash:
            raise UsageError(f"two inputs are named {clash[0]}")
        async with _compute(c, keys, deployment, job.market) as client:
            outcome = await client.run(
                job.module,
                job.args,
                {**local, **fetched},
                replicas=job.replicas,
                limits=job.limits,
                max_price=job.max_price,
                name=job.name,
            )
        written, notes = write_outputs(
            job.out_dir, outcome.result.outputs, job.force, outcome.job_id
        )
        return outcome, written, notes

    outcome, written, notes = asyncio.run(go())
    for note in notes:
        err_console().print(f"warning: {note}", markup=False, soft_wrap=True)
    result = outcome.result
    if c.json:
        emit(c, outcome_json(outcome) | {"written": [str(p) for p in written]}, lambda: None)
    else:
        sys.stdout.buffer.write(result.stdout)
        sys.stdout.flush()
        sys.stderr.buffer.write(result.stderr)
        sys.stderr.flush()
    if not result.ok:
        why = f": {result.message}" if result.message else ""
        raise JobFailed(
            f"job {outcome.job_id.hex()[:16]} ended {result.status.name.lower()}"
            f" with exit status {result.exit_code}{why}"
        )


def _map_inputs(pattern: str) -> list[tuple[str, bytes]]:
    files = sorted(Path(p) for p in glob.glob(pattern) if Path(p).is_file())
    if not files:
        raise UsageError(f"--map {pattern!r} matches no file")
    names = [_input_name(str(f)) for f in files]
    if len(set(names)) != len(names):
        raise UsageError(f"--map {pattern!r} matches two files of the same name")
    return [(n, f.read_bytes()) for n, f in zip(names, files, strict=True)]


def _run_map(
    c: Ctx, job: _Job, items: list[tuple[str, bytes]], keys: AccountKeys, deployment: Path | None
) -> None:
    async def go() -> list[dict[str, object]]:
        async with _compute(c, keys, deployment, job.market) as client:
            with map_bar(c, len(items)) as progress:
                done = await client.map(
                    job.module,
                    items,
                    job.args,
                    replicas=job.replicas,
                    limits=job.limits,
                    max_price=job.max_price,
                    progress=progress,
                    name=job.name,
                )
        out: list[dict[str, object]] = []
        for item in done:
            row = map_item_json(item)
            if item.outcome is not None:
                files = dict(item.outcome.result.outputs)
                files.setdefault("stdout", item.outcome.result.stdout)
                where = job.out_dir / item.name
                written, notes = write_outputs(where, files, job.force, item.outcome.job_id)
                row["written"] = [str(p) for p in written]
                for note in notes:
                    err_console().print(f"warning: {note}", markup=False, soft_wrap=True)
            out.append(row)
        return out

    rows = asyncio.run(go())
    summary = map_summary_rows(rows)
    emit(c, {"summary": summary, "jobs": rows}, lambda: _show_map(rows, summary))
    bad = sum(1 for r in rows if not r.get("ok"))
    if bad:
        first = next(r for r in rows if not r.get("ok"))
        why = first.get("error") or first.get("message") or f"exit {first.get('exit_code')}"
        raise JobFailed(
            f"{bad} of {summary['jobs']} jobs did not succeed ({first['input']}: {why})"
        )


def map_summary_rows(rows: list[dict[str, object]]) -> dict[str, int | str]:
    ok = sum(1 for r in rows if r.get("ok"))
    return {
        "jobs": len(rows),
        "succeeded": ok,
        "failed": sum(1 for r in rows if not r.get("ok") and "error" not in r),
        "errors": sum(1 for r in rows if "error" in r),
        "fuel_used": sum(int(str(r.get("fuel_used", 0))) for r in rows),
        "cost_wei": str(sum(int(str(r.get("cost_wei", 0))) for r in rows)),
    }


def _show_map(rows: list[dict[str, object]], summary: dict[str, int | str]) -> None:
    for r in rows:
        state = "ok" if r.get("ok") else ("error" if "error" in r else "failed")
        err_console().print(f"{r['input']}: {state}", markup=False, soft_wrap=True)
    show_fields(
        [
            ("jobs", summary["jobs"]),
            ("succeeded", summary["succeeded"]),
            ("failed", summary["failed"]),
            ("errors", summary["errors"]),
            ("fuel used", summary["fuel_used"]),
            ("cost (wei)", summary["cost_wei"]),
        ]
    )


def jobs_cmd(
    ctx: typer.Context,
    account: AccountOpt = None,
    private_key_env: KeyEnvOpt = None,
    deployment: DeploymentOpt = None,
    json: JsonFlag = False,
) -> None:
    """List this account's jobs: state, providers, fuel used and cost."""
    c = command_ctx(ctx, json=json)
    keys = _keys(c, account, private_key_env)
    dep = load_deployment(c, deployment)
    address = Account.from_key(keys.eth_private_key).address
    path = journal_path(
        c.config.data_dir / "jobs", dep.chain_id, dep.address("LeaseManager"), address
    )
    entries = read_journal(path)
    emit(c, [e.to_json() for e in entries], lambda: jobs_table(entries))


def register(app: typer.Typer) -> None:
    """Add ``run`` and ``jobs`` to the root app."""
    app.command("run")(run_cmd)
    app.command("jobs")(jobs_cmd)


__all__ = ["jobs_cmd", "register", "run_cmd"]
