"""A node's compute policy: the most a job may ask, and the limits of its worker processes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from nuclux.core.job import JobLimits
from nuclux.errors import UsageError

WORKER_OVERHEAD_BYTES: Final = 384 << 20  # interpreter, wasmtime, module cache, compilation

DEFAULT_CEILING: Final = JobLimits(
    fuel=10**12,
    memory_bytes=1 << 30,
    timeout_ms=600_000,
    stdout_bytes=16 << 20,
    stderr_bytes=1 << 20,
    output_bytes=256 << 20,
    scratch_bytes=1 << 30,
)


def worker_memory_for(ceiling: JobLimits) -> int:
    """The least ``RLIMIT_DATA`` a worker needs to run any job within ``ceiling``: the
    largest of linear memory, inputs (held while written to disk) and outputs (read in
    after linear memory is released), plus stdout, stderr and the worker's own overhead."""
    biggest = max(ceiling.memory_bytes, ceiling.scratch_bytes, ceiling.output_bytes)
    return biggest + ceiling.stdout_bytes + ceiling.stderr_bytes + WORKER_OVERHEAD_BYTES


@dataclass(frozen=True, slots=True)
class PoolLimits:
    """What a ``ComputePool`` allows and how it bounds its workers.

    ``ceiling``: a job asking for more in any limit is rejected. ``compile_cpu_seconds`` and
    ``compile_timeout`` bound compiling one module (CPU time in the worker, wall time in the
    pool). ``worker_memory_bytes`` is each worker's ``RLIMIT_DATA``; by default, and at
    least, ``worker_memory_for(ceiling)``. ``kill_grace`` is how long past its wall-clock
    limit a job may take before the watchdog kills its worker. A worker is replaced after
    ``max_jobs_per_worker`` jobs, and after any job that hit a limit or crashed.
    ``prestart`` workers (default: one per slot) are kept started; ``spawn_timeout`` bounds
    starting one. ``cache_entries`` and ``cache_bytes`` bound each worker's compiled modules.
    """

    ceiling: JobLimits = DEFAULT_CEILING
    compile_cpu_seconds: int = 10
    compile_timeout: float = 30.0
    worker_memory_bytes: int | None = None
    kill_grace: float = 1.0
    max_jobs_per_worker: int = 1000
    prestart: int | None = None
    spawn_timeout: float = 30.0
    cache_entries: int = 32
    cache_bytes: int = 128 << 20

    def __post_init__(self) -> None:
        need = worker_memory_for(self.ceiling)
        if self.worker_memory_bytes is not None and self.worker_memory_bytes < need:
            raise UsageError(
                f"worker_memory_bytes must be at least {need} for this ceiling"
                " (worker_memory_for: its largest memory, inputs or outputs, plus stdout,"
                f" stderr and {WORKER_OVERHEAD_BYTES} bytes of worker overhead)"
            )
        if self.compile_cpu_seconds < 1 or self.compile_timeout <= 0 or self.kill_grace < 0:
            raise UsageError("compile limits must be positive and kill_grace non-negative")
        if self.max_jobs_per_worker < 1 or self.spawn_timeout <= 0 or self.cache_entries < 1:
            raise UsageError("max_jobs_per_worker, spawn_timeout and cache_entries must be > 0")
        if self.prestart is not None and self.prestart < 0:
            raise UsageError("prestart must be >= 0")

    @property
    def worker_memory(self) -> int:
        """Each worker's ``RLIMIT_DATA`` in bytes."""
        if self.worker_memory_bytes is not None:
            return self.worker_memory_bytes
        return worker_memory_for(self.ceiling)

    def worker_config(self, parent: int) -> dict[str, Any]:
        """What a worker process is started with."""
        return {
            "parent": parent,
            "worker_memory_bytes": self.worker_memory,
            "cache_entries": self.cache_entries,
            "cache_bytes": self.cache_bytes,
            "max_request_bytes": (32 << 20) + self.ceiling.scratch_bytes,
        }
