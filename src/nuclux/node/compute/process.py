"""The pool's side of one worker process: start it, hand it a job, watch it, kill it.

Theory of operation
-------------------
``WorkerProcess.spawn`` starts ``python -m nuclux.node.compute.worker`` with pipes for the
protocol and for its stderr (drained into a short tail, kept to explain a crash), no other
descriptors and only a few locale and path variables of the node's environment, and waits
for its ``ready`` frame. ``execute`` sends one job and is the watchdog for it, in two
phases:

- compiling (until the worker says ``started``): bounded by ``compile_timeout``. Dying here
  (SIGXCPU from its CPU limit, an allocation failure under its memory limit) or timing out
  is the module's fault: ``JobRejected`` naming the limit.
- running: bounded by the job's wall-clock limit plus ``kill_grace``. The worker's own
  epoch deadline normally ends the job first; if it does not (a blocking host call), the
  watchdog kills the worker and the result is ``TIMED_OUT``. A worker killed by its CPU
  limit gives ``CPU_LIMIT``, by its memory limit ``WORKER_MEMORY``, otherwise ``CRASHED``.

When the worker could not report it, the fuel used is unknown: a job stopped by the
wall-clock or CPU limit is charged its fuel limit (it held the slot for its whole term;
``docs/compute.md``), a crash is charged nothing. Every frame from the worker is bounded by
what the job may return, and any exception or cancellation inside ``execute`` kills the
worker, so a job never outlives its caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nuclux.core.job import (
    ComputeError,
    JobRejected,
    JobResult,
    JobSpec,
    JobStatus,
)
from nuclux.errors import NucluxError
from nuclux.node.compute import protocol
from nuclux.node.compute.config import PoolLimits

log = logging.getLogger("nuclux.node.compute")

_TAIL_BYTES = 4096
_REAP_SECONDS = 2.0
# what a worker inherits of the node's environment (no keys, passphrases or tokens)
_ENVIRONMENT = frozenset({"PATH", "PYTHONPATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR"})
_MEMORY_SIGNS = (b"memory allocation of", b"MemoryError", b"out of memory")


class WorkerProcess:
    """One started worker; use ``spawn``. Not shared between concurrent jobs."""

    def __init__(self, proc: asyncio.subprocess.Process, limits: PoolLimits, root: Path) -> None:
        self.proc = proc
        self.limits = limits
        self.root = root  # its scratch directory, reused for each of its jobs
        self.jobs = 0
        self.modules: set[bytes] = set()  # hashes this worker was sent (it may evict)
        self._tail = bytearray()
        self._blobs: list[bytes] = []
        self._drain = asyncio.create_task(self._drain_stderr())

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    @classmethod
    async def spawn(cls, limits: PoolLimits, root: Path) -> WorkerProcess:
        config = json.dumps({**limits.worker_config(parent=os.getpid()), "scratch": str(root)})
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "nuclux.node.compute.worker",
            config,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={k: v for k, v in os.environ.items() if k in _ENVIRONMENT},
        )
        worker = cls(proc, limits, root)
        try:
            async with asyncio.timeout(limits.spawn_timeout):
                header = await worker._event(max_body=0)
            if header.get("event") != "ready":
                raise protocol.ProtocolError(f"unexpected first frame {header.get('event')!r}")
        except BaseException as err:
            await worker.kill()
            if isinstance(err, Exception):
                raise ComputeError(f"a compute worker failed to start: {worker.tail()}") from err
            raise
        return worker

    async def kill(self) -> None:
        """SIGKILL the worker (if alive) and reap it."""
        if self.alive:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()
        with contextlib.suppress(asyncio.TimeoutError):
            async with asyncio.timeout(1.0):
                await asyncio.shield(self._drain)

    async def reap(self) -> None:
        """Wait for a worker whose pipe closed to exit, killing it only if it does not.

        Signalling first would race with its exit: ``Popen.send_signal`` polls, reaping the
        process before asyncio's watcher sees it, and the exit status (the reason) is lost.
        """
        try:
            async with asyncio.timeout(_REAP_SECONDS):
                await self.proc.wait()
        except TimeoutError:
            pass
        await self.kill()

    def tail(self) -> str:
        return bytes(self._tail).decode(errors="replace").strip()[-600:] or "(no output)"

    async def _drain_stderr(self) -> None:
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(4096):
            log.debug("compute worker %d: %s", self.pid, chunk.decode(errors="replace"))
            self._tail += chunk
            del self._tail[:-_TAIL_BYTES]

    async def _event(self, max_body: int) -> dict[str, Any]:
        assert self.proc.stdout is not None
        header, self._blobs = await protocol.read_frame(self.proc.stdout, max_body)
        return header

    async def _send(self, header: dict[str, Any], blobs: list[bytes]) -> None:
        assert self.proc.stdin is not None
        await protocol.write_frame(self.proc.stdin, header, blobs)

    async def execute(
        self, job: JobSpec, module: bytes, inputs: Mapping[str, bytes]
    ) -> tuple[JobResult, bool]:
        """Run ``job``; the result and whether this worker may take another job."""
        self.jobs += 1
        names = [i.name for i in job.inputs]
        header: dict[str, Any] = {
            "op": "run",
            "module_hash": job.module_hash.hex(),
            "args": list(job.args),
            "limits": {n: getattr(job.limits, n) for n in job.limits.BOUNDS},
            "deterministic": job.deterministic,
            "seed": job.seed.hex(),
            "inputs": names,
            "compile_cpu_seconds": self.limits.compile_cpu_seconds,
        }
        try:
            await self._compile_phase(job, module, [inputs[n] for n in names], header)
            return await self._run_phase(job)
        except JobRejected:  # the worker answered, or is dead and reaped already
            raise
        except BaseException:  # cancelled, or the pool's own failure: stop the job now
            if self.alive:
                self.proc.kill()
            raise

    async def _compile_phase(
        self, job: JobSpec, module: bytes, inputs: list[bytes], header: dict[str, Any]
    ) -> None:
        with_module = job.module_hash not in self.modules
        try:
            async with asyncio.timeout(self.limits.compile_timeout):
                while True:
                    blobs = [module, *inputs] if with_module else inputs
                    await self._send({**header, "with_module": with_module}, blobs)
                    answer = await self._event(max_body=0)
                    event = answer.get("event")
                    if event != "need_module" or with_module:
                        break
                    with_module = True
        except TimeoutError:
            await self.kill()
            raise JobRejected(
                f"the module did not compile within {self.limits.compile_timeout} s"
                " (compile_timeout)"
            ) from None
        except (asyncio.IncompleteReadError, ConnectionError, protocol.ProtocolError):
            await self.reap()
            raise self._compile_death() from None
        if event == "rejected":
            raise JobRejected(str(answer.get("message", "the module was rejected")))
        if event != "started":
            await self.kill()
            raise ComputeError(f"compute worker answered {event!r} to a job")
        self.modules.add(job.module_hash)

    def _compile_death(self) -> ComputeError:
        rc, tail = self.proc.returncode, self.tail()
        if rc == -signal.SIGXCPU:
            return JobRejected(
                "compiling the module exceeded the worker's CPU-time limit of"
                f" {self.limits.compile_cpu_seconds} s (compile_cpu_seconds)"
            )
        if any(s.decode() in tail for s in _MEMORY_SIGNS):
            return JobRejected(
                "compiling the module needed more memory than the worker's limit of"
                f" {self.limits.worker_memory} bytes (worker_memory_bytes)"
            )
        return ComputeError(f"the compute worker died while compiling ({_exit(rc)}): {tail}")

    async def _run_phase(self, job: JobSpec) -> tuple[JobResult, bool]:
        lim = job.limits
        started = time.monotonic()
        max_body = lim.stdout_bytes + lim.stderr_bytes + lim.output_bytes
        try:
            async with asyncio.timeout(lim.timeout_ms / 1000 + self.limits.kill_grace):
                header = await self._event(max_body)
            if header.get("event") != "done":
                raise protocol.ProtocolError(f"unexpected frame {header.get('event')!r}")
            result = _result(header, self._blobs)
        except TimeoutError:
            await self.kill()
            return self._lost(
                job,
                JobStatus.TIMED_OUT,
                started,
                f"wall-clock limit of {lim.timeout_ms} ms reached (timeout): the watchdog killed"
                f" the job {self.limits.kill_grace} s later, blocked in a host call",
            )
        except (asyncio.IncompleteReadError, ConnectionError):
            await self.reap()
            status, message = self._run_death()
            return self._lost(job, status, started, message)
        except (protocol.ProtocolError, NucluxError, ValueError, TypeError, KeyError) as err:
            await self.kill()
            return self._lost(job, JobStatus.CRASHED, started, f"bad result frame: {err}")
        healthy = result.status in (JobStatus.EXITED, JobStatus.TRAPPED)
        return result, healthy

    def _run_death(self) -> tuple[JobStatus, str]:
        rc, tail = self.proc.returncode, self.tail()
        if rc == -signal.SIGXCPU:
            return JobStatus.CPU_LIMIT, "the worker's CPU-time limit was reached (timeout)"
        if any(s.decode() in tail for s in _MEMORY_SIGNS):
            return (
                JobStatus.WORKER_MEMORY,
                f"the worker ran out of memory ({self.limits.worker_memory} bytes,"
                " worker_memory_bytes)",
            )
        return JobStatus.CRASHED, f"the compute worker died ({_exit(rc)}): {tail}"

    def _lost(
        self, job: JobSpec, status: JobStatus, started: float, message: str
    ) -> tuple[JobResult, bool]:
        charged = job.limits.fuel if status in (JobStatus.TIMED_OUT, JobStatus.CPU_LIMIT) else 0
        wall = time.monotonic() - started
        return JobResult(status, 0, b"", b"", {}, charged, wall, 0, message), False


def _result(header: dict[str, Any], blobs: list[bytes]) -> JobResult:
    names = header["outputs"]
    if not isinstance(names, list) or len(blobs) != 2 + len(names):
        raise protocol.ProtocolError("result frame's outputs do not match its blobs")
    return JobResult(
        JobStatus(header["status"]),
        int(header["exit_code"]),
        blobs[0],
        blobs[1],
        dict(zip(names, blobs[2:], strict=True)),
        int(header["fuel_used"]),
        float(header["wall_seconds"]),
        int(header["memory_bytes"]),
        str(header["message"]),
    )


def _exit(rc: int | None) -> str:
    if rc is not None and rc < 0:
        with contextlib.suppress(ValueError):
            return f"signal {signal.Signals(-rc).name}"
    return f"exit status {rc}"
