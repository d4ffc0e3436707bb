"""The node's compute slots: ``ComputePool(slots, limits).run(job, module, inputs)``.

Theory of operation
-------------------
A pool offers ``slots`` concurrent jobs (the node's compute units) and never runs more: a
job arriving while every slot is busy is refused at once with ``ComputeBusy``, not queued,
so a buyer can go elsewhere. A slot is taken before the first ``await`` of ``run``, so the
count cannot race.

Each job runs in a worker process (``process.WorkerProcess``). Started workers wait in an
idle list (``prestart`` of them, by default one per slot), so a small job costs a few pipe
round trips rather than an interpreter start. A worker goes back to the list only after a
job that exited or trapped, and is replaced after ``max_jobs_per_worker`` jobs; after any
job that hit a limit, crashed or was cancelled it is killed and a fresh one is started in
the background. Each worker keeps its own cache of compiled modules, so the pool hands a
job to an idle worker that was last sent the same module when there is one.

Before a job reaches a worker the pool checks it: the module's header and size
(``check_module``, before anything parses it) and its hash against the spec, every input
against its hash, and the limits against the node's ceiling. Each worker has its own
scratch directory ``<scratch_root>/w-<n>``, emptied before every job and removed with the
worker.

``run`` is cancellable: cancelling it kills the job's worker at once. ``close`` kills every
worker and removes the scratch root if the pool made it.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import shutil
import tempfile
from collections.abc import Coroutine, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from nuclux.core.job import (
    ComputeBusy,
    ComputeError,
    JobRejected,
    JobResult,
    JobSpec,
    check_inputs,
    check_module,
)
from nuclux.errors import IntegrityError, UsageError
from nuclux.node.compute.config import PoolLimits
from nuclux.node.compute.process import WorkerProcess

log = logging.getLogger("nuclux.node.compute")

_HASH_IN_THREAD = 1 << 20  # hash inputs larger than this off the event loop


class ComputePool:
    """At most ``slots`` WASI jobs at once, each in a killable worker process."""

    def __init__(
        self,
        slots: int,
        limits: PoolLimits | None = None,
        *,
        scratch_root: str | Path | None = None,
    ) -> None:
        if not isinstance(slots, int) or slots < 1:
            raise UsageError("a compute pool needs at least one slot")
        self.slots = slots
        self.limits = limits or PoolLimits()
        self._given_root = Path(scratch_root) if scratch_root is not None else None
        self._root: Path | None = None
        self._idle: list[WorkerProcess] = []
        self._workers: set[WorkerProcess] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy = 0
        self._counter = itertools.count(1)
        self._state = "new"

    @property
    def busy(self) -> int:
        """Slots in use now."""
        return self._busy

    @property
    def idle_workers(self) -> int:
        return len(self._idle)

    def worker_pids(self) -> list[int]:
        """The process ids of the pool's live workers (idle or busy)."""
        return sorted(w.pid for w in self._workers if w.alive)

    async def __aenter__(self) -> ComputePool:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Create the scratch root and start the prestarted workers."""
        if self._state != "new":
            raise UsageError(f"compute pool already {self._state}")
        self._state = "running"
        if self._given_root is None:
            self._root = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="nuclux-compute-"))
        else:
            self._root = self._given_root
            await asyncio.to_thread(_fresh_root, self._root)
        want = self.slots if self.limits.prestart is None else min(self.limits.prestart, self.slots)
        try:
            workers = await asyncio.gather(*(self._spawn() for _ in range(want)))
        except BaseException:
            await self.close()
            raise
        self._idle.extend(workers)

    async def close(self) -> None:
        """Kill every worker, wait for them, and remove the scratch root the pool made."""
        if self._state == "closed":
            return
        self._state = "closed"
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(
            *(self._retire(w) for w in list(self._workers)), return_exceptions=True
        )
        self._workers.clear()
        self._idle.clear()
        if self._root is not None and self._given_root is None:
            await asyncio.to_thread(shutil.rmtree, self._root, True)

    async def run(
        self, job: JobSpec, module: bytes, inputs: Mapping[str, bytes] | None = None
    ) -> JobResult:
        """Run ``job`` (its module bytes and inputs as its spec names them)."""
        if self._state != "running":
            hint = ": start it first" if self._state == "new" else ""
            raise ComputeError(f"the compute pool is {self._state}{hint}")
        if self._busy >= self.slots:
            raise ComputeBusy(
                f"all {self.slots} compute slots of this node are busy: retry later or elsewhere"
            )
        self._busy += 1
        worker: WorkerProcess | None = None
        healthy = False
        try:
            inputs = dict(inputs or {})
            await self._check(job, module, inputs)
            worker = await self._take(job.module_hash)
            result, healthy = await worker.execute(job, module, inputs)
            if self._state != "running":
                raise ComputeError("the compute pool was closed while the job ran")
            return result
        except JobRejected:
            healthy = worker is not None and worker.alive
            raise
        finally:
            self._busy -= 1
            self._give_back(worker, healthy)

    async def _check(self, job: JobSpec, module: bytes, inputs: dict[str, bytes]) -> None:
        over = job.limits.exceeds(self.limits.ceiling)
        if over:
            raise JobRejected(
                f"the job asks for more than this node allows in {', '.join(over)}:"
                f" at most {', '.join(f'{n}={getattr(self.limits.ceiling, n)}' for n in over)}"
            )
        size = len(module) + sum(len(d) for d in inputs.values())
        if size > _HASH_IN_THREAD:
            digest = await asyncio.to_thread(check_module, module)
            await asyncio.to_thread(check_inputs, job, inputs)
        else:
            digest = check_module(module)
            check_inputs(job, inputs)
        if not hmac.compare_digest(digest, job.module_hash):
            raise IntegrityError("the module's sha256 differs from the spec's module_hash")

    async def _spawn(self) -> WorkerProcess:
        assert self._root is not None
        worker = await WorkerProcess.spawn(self.limits, self._root / f"w-{next(self._counter)}")
        if self._state == "closed":  # closed while it started: close() did not see it
            await self._retire(worker)
            raise ComputeError("the compute pool was closed")
        self._workers.add(worker)
        return worker

    async def _take(self, module_hash: bytes) -> WorkerProcess:
        for dead in [w for w in self._idle if not w.alive]:
            self._idle.remove(dead)
            self._workers.discard(dead)
        for i in range(len(self._idle) - 1, -1, -1):  # one that has the module compiled
            if module_hash in self._idle[i].modules:
                return self._idle.pop(i)
        if self._idle:
            return self._idle.pop()
        return await self._spawn()

    def _give_back(self, worker: WorkerProcess | None, healthy: bool) -> None:
        if worker is None or self._state == "closed":  # close() retires every worker
            return
        reuse = (
            healthy
            and worker.alive
            and self._state == "running"
            and worker.jobs < self.limits.max_jobs_per_worker
            and len(self._idle) < self.slots
        )
        if reuse:
            self._idle.append(worker)
            return
        self._background(self._retire(worker))
        want = self.slots if self.limits.prestart is None else self.limits.prestart
        if self._state == "running" and len(self._idle) + self._busy < min(want, self.slots):
            self._background(self._replenish())

    async def _retire(self, worker: WorkerProcess) -> None:
        """Kill ``worker`` and remove its scratch directory."""
        await worker.kill()
        self._workers.discard(worker)
        await asyncio.to_thread(shutil.rmtree, worker.root, True)

    async def _replenish(self) -> None:
        try:
            worker = await self._spawn()
        except ComputeError as err:
            log.warning("could not start a compute worker: %s", err)
            return
        if self._state == "running" and len(self._idle) < self.slots:
            self._idle.append(worker)
        else:
            self._background(self._retire(worker))

    def _background(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _fresh_root(root: Path) -> None:
    """Make ``root`` and remove worker directories a previous pool left there."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    for path in root.glob("w-*"):
        shutil.rmtree(path, ignore_errors=True)
