"""Watching one running job from inside the worker: why it must stop, and stopping it.

Theory of operation
-------------------
A job is stopped by incrementing the engine's epoch once: its store's deadline is one tick
away, so the job traps at its next loop back-edge or function entry. ``Stopper`` records
the first reason (a status number and a message) and makes that one bump; it is closed
when the job's wasm returns, after which nothing trips, because the epoch belongs to the
engine and the worker's next job must not see a late bump.

Three things trip it: ``Capture`` (the stdout and stderr callbacks) when a stream passes
its cap, keeping exactly the cap; and ``Monitor``, one thread per sandbox, at the
wall-clock deadline or when ``quota_breach`` finds the scratch directory over its byte or
entry quota, which it polls every ``scratch.POLL_SECONDS``. A thread per job would cost a
start and a join on every job (GIL hand-offs of up to the switch interval, a visible tail
on small jobs); this one is told of a job with a notify and is never waited for.

Status numbers are ``nuclux.core.job.JobStatus``'s (a test keeps them equal); this module
runs in the worker and imports only the standard library and wasmtime.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import wasmtime

from nuclux.node.compute import scratch

EXITED, TRAPPED, FUEL_EXHAUSTED, TIMED_OUT, STDOUT_LIMIT, DISK_QUOTA, OUTPUT_LIMIT = range(7)


class Stopper:
    """The first reason to stop a job, and the epoch bump that makes it trap. Closed when
    the job's wasm has returned, after which nothing trips (the epoch is the engine's, and
    the next job's store must not see a late bump)."""

    def __init__(self, engine: wasmtime.Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._closed = False
        self.reason: tuple[int, str] | None = None

    def trip(self, status: int, message: str) -> None:
        with self._lock:
            if self.reason is None and not self._closed:
                self.reason = (status, message)
                self._engine.increment_epoch()

    def close(self) -> None:
        with self._lock:
            self._closed = True


@dataclass(slots=True)
class Capture:
    """A WASI output stream (``name`` is stdout or stderr) kept up to ``cap`` bytes."""

    name: str
    cap: int
    stopper: Stopper
    parts: list[bytes] = field(default_factory=list)
    size: int = 0

    def write(self, data: bytes) -> int:
        """Keep what fits under the cap; tell WASI everything was written."""
        n, room = len(data), self.cap - self.size
        if len(data) > room:
            data = data[: max(room, 0)]
            self.stopper.trip(
                STDOUT_LIMIT,
                f"{self.name} exceeded its cap of {self.cap} bytes ({self.name}_bytes)",
            )
        self.parts.append(data)
        self.size += len(data)
        return n

    def value(self) -> bytes:
        return b"".join(self.parts)


@dataclass(frozen=True, slots=True)
class _Watch:
    stopper: Stopper
    deadline: float
    timeout_ms: int
    root: Path
    quota: int


class Monitor:
    """The thread that watches the running job's deadline and scratch quota."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._watch: _Watch | None = None
        threading.Thread(target=self._loop, name="job-monitor", daemon=True).start()

    def watch(self, stopper: Stopper, timeout_ms: int, root: Path, quota: int) -> None:
        deadline = time.monotonic() + timeout_ms / 1000
        with self._cond:
            self._watch = _Watch(stopper, deadline, timeout_ms, root, quota)
            self._cond.notify()

    def release(self) -> None:
        with self._cond:  # no notify: the thread finds out at its next wake-up
            self._watch = None

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._watch is None:
                    self._cond.wait()
                watch = self._watch
                left = watch.deadline - time.monotonic()
                if left > 0:
                    self._cond.wait(min(scratch.POLL_SECONDS, left))
                    if self._watch is not watch:
                        continue
            if time.monotonic() >= watch.deadline:
                message = f"wall-clock limit of {watch.timeout_ms} ms reached (timeout)"
                watch.stopper.trip(TIMED_OUT, message)
                self._release_if(watch)
                continue
            try:
                breach = quota_breach(watch.root, watch.quota)
            except OSError:  # the job is tearing its tree down; the final check decides
                breach = ""
            if breach:
                watch.stopper.trip(DISK_QUOTA, breach)
                self._release_if(watch)

    def _release_if(self, watch: _Watch) -> None:
        with self._cond:
            if self._watch is watch:
                self._watch = None


def quota_breach(root: Path, quota: int) -> str:
    """Why the scratch directory is over its quota, or "" if it is not."""
    used, entries = scratch.usage(root)
    if entries > scratch.MAX_ENTRIES:
        return f"the scratch directory holds more than {scratch.MAX_ENTRIES} entries"
    if used > quota:
        return (
            f"the scratch directory holds {used} bytes, above its quota of {quota} (scratch_bytes)"
        )
    return ""
