"""What ``nuclux run`` and ``nuclux jobs`` print and write: outputs on disk (never over an
existing file without ``--force``), JSON of an outcome, the map progress bar and summary, the
jobs table."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from nuclux.cli.output import Ctx, stderr_console
from nuclux.cli.output import table as print_table
from nuclux.core.types import format_nux
from nuclux.errors import UsageError
from nuclux.sdk.compute import JobEntry, JobOutcome, MapItem


def write_outputs(
    directory: Path, outputs: Mapping[str, bytes], force: bool, job_id: bytes
) -> tuple[list[Path], list[str]]:
    """Write each output as ``directory/<name>``; an existing file is kept unless ``force``
    (the output then goes beside it as ``<name>.<job id prefix>``). Returns the paths written
    and a note per output written under another name."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create {directory}: {err}") from None
    written: list[Path] = []
    notes: list[str] = []
    for name in sorted(outputs):
        path = directory / name
        if path.exists() and not force:
            other = directory / f"{name}.{job_id.hex()[:8]}"
            notes.append(f"{path} exists (use --force to overwrite); wrote {other} instead")
            path = other
        _write(path, outputs[name], force)
        written.append(path)
    return written, notes


def _write(path: Path, data: bytes, force: bool) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (0 if force else os.O_EXCL)
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW, 0o644)
    except FileExistsError:
        raise UsageError(f"{path} exists: use --force to overwrite it") from None
    except OSError as err:
        raise UsageError(f"cannot write {path}: {err}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def outcome_json(outcome: JobOutcome) -> dict[str, Any]:
    r = outcome.result
    return {
        "job": outcome.job_id.hex(),
        "status": r.status.name,
        "exit_code": r.exit_code,
        "ok": r.ok,
        "message": r.message,
        "stdout": r.stdout.decode("utf-8", "replace"),
        "stderr": r.stderr.decode("utf-8", "replace"),
        "outputs": sorted(r.outputs),
        "result_hash": r.result_hash.hex(),
        "providers": list(outcome.providers),
        "declined": list(outcome.declined),
        "leases": list(outcome.leases),
        "fuel_used": outcome.fuel_used,
        "cost_wei": str(outcome.cost),
        "cost": format_nux(outcome.cost),
    }


def map_item_json(item: MapItem) -> dict[str, Any]:
    if item.outcome is None:
        return {"input": item.name, "ok": False, "error": str(item.error)}
    return {"input": item.name} | outcome_json(item.outcome)


@contextmanager
def map_bar(c: Ctx, total: int) -> Iterator[Callable[[int, int], None] | None]:
    """A jobs-done bar on stderr when it is a terminal and not ``--json``."""
    console = stderr_console()
    if c.json or not console.is_terminal:
        yield None
        return
    bar = Progress(
        TextColumn("jobs"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    task = bar.add_task("jobs", total=total)
    with bar:
        yield lambda done, all_: bar.update(task, completed=done, total=all_)


def jobs_table(entries: list[JobEntry]) -> None:
    print_table(
        "Jobs",
        ["job", "module", "state", "providers", "fuel", "cost (NUX)", "exit", "started"],
        [
            (
                e.id[:16],
                e.module,
                e.state,
                ", ".join(p[:10] for p in e.providers) or None,
                e.fuel_used,
                format_nux(e.cost_wei),
                e.exit_code,
                datetime.fromtimestamp(e.started, UTC).strftime("%Y-%m-%d %H:%M:%S"),
            )
            for e in entries
        ],
    )
