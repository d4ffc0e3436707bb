"""Run one WASI job in this process: wasmtime with fuel, memory, epoch and output limits.

Theory of operation
-------------------
A ``Sandbox`` owns one engine and runs one job at a time on the calling thread. The engine
is configured once for every job (``engine_config``): fuel metering, epoch interruption,
canonical NaNs, no relaxed SIMD, no threads or shared memory, single-threaded compilation
(a slot uses one core). Compiled modules are cached by their sha256 (LRU, bounded by count
and by module bytes). ``compile`` rejects, before instantiation, a module that wasmtime
cannot compile, that imports anything but ``WASI_P1``, or that is not a WASI command (no
``_start: [] -> []``).

``run`` gives each job a fresh store: ``set_fuel(limits.fuel)``, ``set_limits`` on linear
memory (``memory.grow`` beyond it returns -1 and the module decides what follows; a module
whose initial memory is above it does not instantiate), tables and instance count, and an
epoch deadline one tick away. Nothing ticks while the job behaves: ``supervise`` stops it
with one epoch bump at the wall-clock deadline, when the scratch quota is passed, or when
stdout or stderr passes its cap; the first recorded reason is the job's status. A blocking
host call (a long ``poll_oneoff``) is not interrupted by epochs: the pool's watchdog kills
the worker instead. After a wall-clock stop the fuel count is only a lower bound (an epoch
trap does not save the running function's fuel counter), so such a job is charged its fuel
limit.

WASI sees: args ``["main", *args]``, no environment, an empty stdin, the scratch directory
preopened as ``/``, stdout and stderr captured. The deterministic profile (``wasi_host``)
swaps in seeded randomness and a fixed clock through a second linker.

This module runs in the worker process and imports only the standard library and wasmtime.
Status numbers are ``nuclux.core.job.JobStatus``'s (a test keeps them equal).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import wasmtime

from nuclux.node.compute import scratch
from nuclux.node.compute.supervise import (
    DISK_QUOTA,
    EXITED,
    FUEL_EXHAUSTED,
    OUTPUT_LIMIT,
    TIMED_OUT,
    TRAPPED,
    Capture,
    Monitor,
    Stopper,
    quota_breach,
)
from nuclux.node.compute.wasi_host import WASI_MODULE, WASI_P1, DeterministicHost

MAX_TABLE_ELEMENTS: Final = 1 << 20
MAX_OUTPUTS: Final = 256


class Rejected(Exception):
    """The module cannot run here (the message says why)."""


@dataclass(frozen=True, slots=True)
class Run:
    """One job as the sandbox needs it (the fields of ``nuclux.core.job.JobSpec``)."""

    args: tuple[str, ...]
    fuel: int
    memory_bytes: int
    timeout_ms: int
    stdout_bytes: int
    stderr_bytes: int
    output_bytes: int
    scratch_bytes: int
    deterministic: bool = False
    seed: bytes = bytes(32)


@dataclass(frozen=True, slots=True)
class Outcome:
    status: int
    exit_code: int
    stdout: bytes
    stderr: bytes
    outputs: dict[str, bytes]
    fuel_used: int
    wall_seconds: float
    memory_bytes: int
    message: str = ""


def engine_config() -> wasmtime.Config:
    config = wasmtime.Config()
    config.consume_fuel = True
    config.epoch_interruption = True
    config.cranelift_nan_canonicalization = True
    config.wasm_relaxed_simd = False
    config.wasm_threads = False
    config.shared_memory = False
    config.parallel_compilation = False
    return config


class Sandbox:
    """One engine, its linkers and module cache; ``run`` one job at a time."""

    def __init__(self, cache_entries: int = 32, cache_bytes: int = 128 << 20) -> None:
        self.engine = wasmtime.Engine(engine_config())
        self._host = DeterministicHost()
        self._linkers: dict[bool, wasmtime.Linker] = {}
        for deterministic in (False, True):
            linker = wasmtime.Linker(self.engine)
            linker.define_wasi()
            if deterministic:
                self._host.install(linker)
            self._linkers[deterministic] = linker
        self._cache: OrderedDict[bytes, tuple[wasmtime.Module, int]] = OrderedDict()
        self._cache_entries = cache_entries
        self._cache_bytes = cache_bytes
        self._monitor = Monitor()

    def cached(self, module_hash: bytes) -> wasmtime.Module | None:
        hit = self._cache.get(module_hash)
        if hit is None:
            return None
        self._cache.move_to_end(module_hash)
        return hit[0]

    def compile(self, module_hash: bytes, wasm: bytes) -> wasmtime.Module:
        """Compile and check ``wasm`` (whose sha256 the caller checked), caching it."""
        try:
            module = wasmtime.Module(self.engine, wasm)
        except wasmtime.WasmtimeError as err:
            raise Rejected(f"invalid WebAssembly module: {_first_line(err)}") from None
        _check_interface(module)
        self._cache[module_hash] = (module, len(wasm))
        while len(self._cache) > self._cache_entries or (
            len(self._cache) > 1 and sum(n for _, n in self._cache.values()) > self._cache_bytes
        ):
            self._cache.popitem(last=False)
        return module

    def run(
        self,
        module: wasmtime.Module,
        run: Run,
        root: Path,
        on_start: Callable[[], None] | None = None,
    ) -> Outcome:
        """Run ``module`` in the prepared scratch directory ``root``; collect outputs."""
        store = wasmtime.Store(self.engine)
        store.set_fuel(run.fuel)
        store.set_limits(
            memory_size=run.memory_bytes,
            table_elements=MAX_TABLE_ELEMENTS,
            instances=1,
            tables=4,
            memories=1,
        )
        store.set_epoch_deadline(1)
        stopper = Stopper(self.engine)
        out = Capture("stdout", run.stdout_bytes, stopper)
        err = Capture("stderr", run.stderr_bytes, stopper)
        wasi = wasmtime.WasiConfig()
        wasi.argv = ["main", *run.args]
        wasi.preopen_dir(str(root), "/")
        wasi.stdout_custom = out.write
        wasi.stderr_custom = err.write
        store.set_wasi(wasi)
        if run.deterministic:
            self._host.reset(run.seed)
        instance: wasmtime.Instance | None = None
        if on_start is not None:
            on_start()
        started = time.perf_counter()
        self._monitor.watch(stopper, run.timeout_ms, root, run.scratch_bytes)
        try:
            status, code, message = EXITED, 0, ""
            instance = self._linkers[run.deterministic].instantiate(store, module)
            start = instance.exports(store)["_start"]
            assert isinstance(start, wasmtime.Func)  # checked in compile
            start(store)
        except wasmtime.ExitTrap as exit_:
            code = exit_.code & 0xFFFFFFFF
        except wasmtime.Trap as trap:
            status, message = _trap_status(trap, run)
        except wasmtime.WasmtimeError as error:
            status, message = TRAPPED, f"the job failed: {_first_line(error)}"
        finally:
            stopper.close()
            self._monitor.release()
        wall = time.perf_counter() - started
        if stopper.reason is not None:  # a limit wins over how the job then ended
            (status, message), code = stopper.reason, 0
        if status == EXITED:
            breach = quota_breach(root, run.scratch_bytes)
            if breach:
                status, code, message = DISK_QUOTA, 0, breach
        memory = _memory_size(store, instance)
        # An epoch trap does not save the running function's fuel counter, so after a
        # wall-clock stop the count is only a lower bound: the job is charged its limit.
        fuel_used = run.fuel if status == TIMED_OUT else run.fuel - store.get_fuel()
        del instance, store  # unmap linear memory before the outputs are read in
        outputs: dict[str, bytes] = {}
        if status == EXITED:
            try:
                outputs = scratch.collect(root, MAX_OUTPUTS, run.output_bytes)
            except scratch.OutputRejected as rejected:
                status, code, message = OUTPUT_LIMIT, 0, str(rejected)
            else:
                message = f"exited with status {code}" if code else ""
        if (status != EXITED or code) and memory * 4 >= run.memory_bytes * 3:
            message += (
                f"; linear memory was at {memory} of its {run.memory_bytes} byte limit"
                " (memory_bytes): a refused memory.grow may be why"
            )
        return Outcome(
            status, code, out.value(), err.value(), outputs, fuel_used, wall, memory, message
        )


def _trap_status(trap: wasmtime.Trap, run: Run) -> tuple[int, str]:
    code = trap.trap_code
    if code is wasmtime.TrapCode.OUT_OF_FUEL:
        return FUEL_EXHAUSTED, f"fuel limit of {run.fuel} exhausted (fuel)"
    if code is wasmtime.TrapCode.STACK_OVERFLOW:
        return TRAPPED, "trap: call stack exhausted (stack overflow: recursion too deep)"
    if code is wasmtime.TrapCode.INTERRUPT:  # only the stopper interrupts, and it says why
        return TIMED_OUT, f"wall-clock limit of {run.timeout_ms} ms reached (timeout)"
    return TRAPPED, f"trap: {_first_line(trap)}"


def _check_interface(module: wasmtime.Module) -> None:
    foreign = sorted(
        f"{i.module}.{i.name}"
        for i in module.imports
        if i.module != WASI_MODULE or i.name not in WASI_P1
    )
    if foreign:
        shown = ", ".join(foreign[:5]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        raise Rejected(
            f"the module imports {shown}, which this sandbox does not offer"
            f" (only {WASI_MODULE}, WASI preview 1)"
        )
    start = next((e for e in module.exports if e.name == "_start"), None)
    ty = start.type if start is not None else None
    if not isinstance(ty, wasmtime.FuncType) or ty.params or ty.results:
        raise Rejected(
            "not a WASI command module: it exports no _start function taking and returning"
            " nothing (build an executable, not a library or reactor)"
        )


def _memory_size(store: wasmtime.Store, instance: wasmtime.Instance | None) -> int:
    if instance is None:
        return 0
    memory = instance.exports(store).get("memory")
    return memory.data_len(store) if isinstance(memory, wasmtime.Memory) else 0


def _first_line(error: Exception) -> str:
    """The gist of a wasmtime error: its first line, or the cause, without the backtrace."""
    text = error.message if isinstance(error, wasmtime.Trap) else str(error)
    head, _, cause = text.partition("Caused by:")
    lines = [ln.strip() for ln in cause.splitlines() if ln.strip()]
    first = (head.strip().splitlines() or ["(no message)"])[0]
    if not lines:
        return first[:300]
    gist = lines[-1].removeprefix("wasm trap: ")
    return (gist if first.startswith("error while executing") else f"{first}: {gist}")[:300]
