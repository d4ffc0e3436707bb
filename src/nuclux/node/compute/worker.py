"""The worker process: ``python -m nuclux.node.compute.worker CONFIG_JSON``.

Theory of operation
-------------------
A worker compiles and runs one job at a time for the pool that started it, speaking
``protocol`` frames on its stdin and stdout. Before anything else it moves those two pipes
to private descriptors and puts ``/dev/null`` in their place, so no stray print can corrupt
a frame. It asks the kernel to kill it when the pool's process dies (``PR_SET_PDEATHSIG``)
and exits when its stdin closes.

Its own limits hold for everything it does, compilation included, which fuel, epochs and
store limits do not cover:

- ``RLIMIT_DATA`` (``worker_memory_bytes``): the process's heap and committed linear
  memory. A compile that wants more aborts the worker (Rust aborts on allocation failure);
  a ``memory.grow`` past it returns -1 like any refused grow.
- ``RLIMIT_CPU``: before compiling, the soft limit is set ``compile_cpu_seconds`` above
  the CPU time used so far; before running, ``ceil(timeout) + 1`` above. Passing it sends
  SIGXCPU, which kills the worker (nothing handles it).
- ``RLIMIT_FSIZE`` at the job's scratch quota, with SIGXFSZ ignored so an oversized write
  fails with EFBIG; ``RLIMIT_CORE`` 0; ``RLIMIT_NOFILE`` at most 1024.

SIGINT is ignored (the pool, not the terminal, ends workers). The worker leaves with
``os._exit`` so no interpreter teardown runs while wasmtime's I/O threads are alive.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import resource
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, Final

from nuclux.node.compute import protocol, scratch
from nuclux.node.compute.sandbox import Rejected, Run, Sandbox

PR_SET_PDEATHSIG: Final = 1
MAX_NOFILE: Final = 1024
EXIT_INTERNAL: Final = 70


def _detach_stdio() -> tuple[int, int]:
    proto_in, proto_out = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    return proto_in, proto_out


def _die_with_parent(parent: int) -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the closed stdin still ends us
        pass
    if os.getppid() != parent:
        os._exit(0)


def _set_soft(which: int, soft: int) -> None:
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(which, (soft, hard))


def _cpu_budget(seconds: int) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _set_soft(resource.RLIMIT_CPU, math.ceil(usage.ru_utime + usage.ru_stime + seconds))


def _limit_self(config: dict[str, Any]) -> None:
    memory = int(config["worker_memory_bytes"])
    resource.setrlimit(resource.RLIMIT_DATA, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    _set_soft(resource.RLIMIT_NOFILE, MAX_NOFILE)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run_request(header: dict[str, Any]) -> Run:
    limits = header["limits"]
    return Run(
        args=tuple(header["args"]),
        fuel=limits["fuel"],
        memory_bytes=limits["memory_bytes"],
        timeout_ms=limits["timeout_ms"],
        stdout_bytes=limits["stdout_bytes"],
        stderr_bytes=limits["stderr_bytes"],
        output_bytes=limits["output_bytes"],
        scratch_bytes=limits["scratch_bytes"],
        deterministic=header["deterministic"],
        seed=bytes.fromhex(header["seed"]),
    )


def handle(
    sandbox: Sandbox, root: Path, out: int, header: dict[str, Any], blobs: list[bytearray]
) -> None:
    """Answer one ``run`` frame (see ``protocol``)."""
    module_hash = bytes.fromhex(header["module_hash"])
    module = sandbox.cached(module_hash)
    if module is None:
        if not header["with_module"]:
            protocol.send(out, {"event": "need_module"})
            return
        _cpu_budget(int(header["compile_cpu_seconds"]))
        try:
            module = sandbox.compile(module_hash, bytes(blobs[0]))
        except Rejected as err:
            protocol.send(out, {"event": "rejected", "message": str(err)})
            return
    inputs = list(zip(header["inputs"], blobs[1:] if header["with_module"] else blobs, strict=True))
    run = _run_request(header)
    _set_soft(resource.RLIMIT_FSIZE, run.scratch_bytes)
    _cpu_budget(math.ceil(run.timeout_ms / 1000) + 1)
    scratch.prepare(root, inputs)
    blobs.clear()  # the inputs are on disk now: free them before the job allocates
    inputs.clear()
    outcome = sandbox.run(module, run, root, lambda: protocol.send(out, {"event": "started"}))
    names = sorted(outcome.outputs)
    protocol.send(
        out,
        {
            "event": "done",
            "status": outcome.status,
            "exit_code": outcome.exit_code,
            "fuel_used": outcome.fuel_used,
            "wall_seconds": outcome.wall_seconds,
            "memory_bytes": outcome.memory_bytes,
            "message": outcome.message,
            "outputs": names,
        },
        [outcome.stdout, outcome.stderr, *(outcome.outputs[n] for n in names)],
    )
    scratch.reset(root)  # after the answer; the job's files are not kept


def main(argv: list[str]) -> None:
    config = json.loads(argv[1])
    proto_in, proto_out = _detach_stdio()
    _die_with_parent(int(config["parent"]))
    _limit_self(config)
    sandbox = Sandbox(int(config["cache_entries"]), int(config["cache_bytes"]))
    protocol.send(proto_out, {"event": "ready", "pid": os.getpid()})
    max_body = int(config["max_request_bytes"])
    root = Path(config["scratch"])
    while True:
        frame = protocol.receive(proto_in, max_body)
        if frame is None:
            os._exit(0)
        try:
            handle(sandbox, root, proto_out, *frame)
        except MemoryError:
            os.write(2, b"nuclux worker: MemoryError (worker_memory_bytes)\n")
            os._exit(EXIT_INTERNAL)
        except BaseException:
            os.write(2, traceback.format_exc().encode(errors="replace")[-4000:])
            os._exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main(sys.argv)
