"""The consumer's local record of its jobs: one JSON line per change, newest wins.

A job is written when it starts (state ``running``) and when it ends (``succeeded``,
``failed``: it ran and did not exit 0, ``no-majority``, ``error``: it could not be run), with
its id, module name and hash, args, input names, replicas, providers, fuel used, cost in wei,
exit status and times. The file (``<journal_dir>/<chain>-<lease manager>-<account>.jsonl``)
is append-only; ``entries`` folds it by job id. Without a directory the journal lives in
memory for the client's life.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from nuclux.errors import UsageError

STATES = ("running", "succeeded", "failed", "no-majority", "error")


@dataclass(frozen=True, slots=True)
class JobEntry:
    """One job as the journal knows it."""

    id: str  # job id, hex
    module: str  # the module's name (file name, or "module")
    module_hash: str
    args: list[str]
    inputs: list[str]
    replicas: int
    state: str
    started: float  # unix seconds
    finished: float | None = None
    providers: list[str] = field(default_factory=list)
    declined: list[str] = field(default_factory=list)
    fuel_used: int = 0
    cost_wei: int = 0
    status: str | None = None  # JobStatus name
    exit_code: int | None = None
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Journal:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._memory: dict[str, JobEntry] = {}

    def record(self, entry: JobEntry) -> None:
        if entry.state not in STATES:
            raise UsageError(f"unknown job state {entry.state!r}")
        self._memory[entry.id] = entry
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(entry.to_json(), sort_keys=True) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    def entries(self) -> list[JobEntry]:
        """Every job, oldest first (the latest line of each)."""
        if self.path is None:
            return sorted(self._memory.values(), key=lambda e: e.started)
        return read_journal(self.path)


def read_journal(path: Path) -> list[JobEntry]:
    """The jobs in a journal file (a missing file is an empty journal; a torn last line from
    a crash is skipped)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    except OSError as err:
        raise UsageError(f"cannot read the job journal {path}: {err}") from None
    jobs: dict[str, JobEntry] = {}
    for line in lines:
        try:
            raw = json.loads(line)
            entry = JobEntry(**raw)
        except (ValueError, TypeError):
            continue
        jobs[entry.id] = entry
    return sorted(jobs.values(), key=lambda e: e.started)


def journal_path(directory: Path, chain_id: int, manager: str, account: str) -> Path:
    return directory / f"{chain_id}-{manager.lower()}-{account.lower()}.jsonl"
