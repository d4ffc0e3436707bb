"""The WASI imports a job may use, and the deterministic profile's replacements.

Theory of operation
-------------------
Jobs see WASI preview 1 (``wasi_snapshot_preview1``) as wasmtime implements it, and nothing
else: ``WASI_P1`` lists the functions, and a module importing anything outside it is
rejected before it is instantiated.

Replicated jobs run in the deterministic profile, where honest replicas must agree bit for
bit. The engine settings that matter (canonical NaNs, no relaxed SIMD, no threads) are the
same for every job (``sandbox.engine_config``); this module supplies the host side. Three
functions are shadowed in the deterministic linker:

- ``random_get`` returns the job's seeded stream: block ``i`` (64 bytes) is
  ``BLAKE2b-512(key = seed, data = i as u64 big-endian)``, consumed in order across calls.
- ``clock_time_get`` returns a fixed clock: every clock starts at ``FIXED_REALTIME_NS``
  (realtime) or 0 (the others) and advances by exactly 1 µs per call, so code that waits
  for time to pass still ends, and the same calls see the same times on every replica.
- ``clock_res_get`` answers 1 µs.

What stays host-dependent even here, because wasmtime offers no hook for it: the order in
which ``fd_readdir`` lists a directory, and the timestamps, inode and device numbers of
files the job creates (input files get a fixed mtime). ``poll_oneoff`` still sleeps for
real (the watchdog bounds it). Deterministic jobs should not depend on these.
"""

from __future__ import annotations

import hashlib
from typing import Final

import wasmtime

WASI_MODULE: Final = "wasi_snapshot_preview1"
WASI_P1: Final = frozenset(
    [
        "args_get",
        "args_sizes_get",
        "environ_get",
        "environ_sizes_get",
        "clock_res_get",
        "clock_time_get",
        "fd_advise",
        "fd_allocate",
        "fd_close",
        "fd_datasync",
        "fd_fdstat_get",
        "fd_fdstat_set_flags",
        "fd_fdstat_set_rights",
        "fd_filestat_get",
        "fd_filestat_set_size",
        "fd_filestat_set_times",
        "fd_pread",
        "fd_prestat_get",
        "fd_prestat_dir_name",
        "fd_pwrite",
        "fd_read",
        "fd_readdir",
        "fd_renumber",
        "fd_seek",
        "fd_sync",
        "fd_tell",
        "fd_write",
        "path_create_directory",
        "path_filestat_get",
        "path_filestat_set_times",
        "path_link",
        "path_open",
        "path_readlink",
        "path_remove_directory",
        "path_rename",
        "path_symlink",
        "path_unlink_file",
        "poll_oneoff",
        "proc_exit",
        "proc_raise",
        "sched_yield",
        "random_get",
        "sock_accept",
        "sock_recv",
        "sock_send",
        "sock_shutdown",
    ]
)
FIXED_REALTIME_NS: Final = 946_684_800 * 10**9  # 2000-01-01T00:00:00Z
CLOCK_STEP_NS: Final = 1_000
_CLOCKS: Final = 4  # realtime, monotonic, process cputime, thread cputime
_ERRNO_SUCCESS: Final = 0
_ERRNO_FAULT: Final = 21
_ERRNO_INVAL: Final = 28
_BLOCK: Final = 64
_I32 = wasmtime.ValType.i32()
_I64 = wasmtime.ValType.i64()


def seeded_stream(seed: bytes, n: int, start_block: int = 0) -> bytes:
    """``n`` bytes of the seeded stream from block ``start_block`` (see the docstring)."""
    blocks = -(-n // _BLOCK)
    return b"".join(
        hashlib.blake2b(i.to_bytes(8, "big"), key=seed, digest_size=_BLOCK).digest()
        for i in range(start_block, start_block + blocks)
    )[:n]


class DeterministicHost:
    """Per-job state of the shadowed functions; ``reset`` before each job."""

    __slots__ = ("_buffer", "_calls", "_next_block", "_seed")

    def __init__(self) -> None:
        self.reset(bytes(32))

    def reset(self, seed: bytes) -> None:
        self._seed = seed
        self._buffer = b""
        self._next_block = 0
        self._calls = 0

    def random_bytes(self, n: int) -> bytes:
        if n > len(self._buffer):
            need = n - len(self._buffer)
            more = -(-need // _BLOCK) + 1
            self._buffer += seeded_stream(self._seed, more * _BLOCK, self._next_block)
            self._next_block += more
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def now(self, clock: int) -> int:
        self._calls += 1
        base = FIXED_REALTIME_NS if clock == 0 else 0
        return base + self._calls * CLOCK_STEP_NS

    def install(self, linker: wasmtime.Linker) -> None:
        """Shadow ``random_get`` and the clocks in ``linker`` (which has WASI defined)."""
        linker.allow_shadowing = True
        linker.define_func(
            WASI_MODULE,
            "random_get",
            wasmtime.FuncType([_I32, _I32], [_I32]),
            self._random_get,
            access_caller=True,
        )
        linker.define_func(
            WASI_MODULE,
            "clock_time_get",
            wasmtime.FuncType([_I32, _I64, _I32], [_I32]),
            self._clock_time_get,
            access_caller=True,
        )
        linker.define_func(
            WASI_MODULE,
            "clock_res_get",
            wasmtime.FuncType([_I32, _I32], [_I32]),
            self._clock_res_get,
            access_caller=True,
        )
        linker.allow_shadowing = False

    def _random_get(self, caller: wasmtime.Caller, ptr: int, length: int) -> int:
        ptr, length = ptr & 0xFFFFFFFF, length & 0xFFFFFFFF
        if _memory(caller, ptr, length) is None:  # check before drawing that many bytes
            return _ERRNO_FAULT
        return _store(caller, ptr, self.random_bytes(length))

    def _clock_time_get(self, caller: wasmtime.Caller, clock: int, _prec: int, ptr: int) -> int:
        if not 0 <= clock < _CLOCKS:
            return _ERRNO_INVAL
        return _store(caller, ptr & 0xFFFFFFFF, self.now(clock).to_bytes(8, "little"))

    def _clock_res_get(self, caller: wasmtime.Caller, clock: int, ptr: int) -> int:
        if not 0 <= clock < _CLOCKS:
            return _ERRNO_INVAL
        return _store(caller, ptr & 0xFFFFFFFF, CLOCK_STEP_NS.to_bytes(8, "little"))


def _memory(caller: wasmtime.Caller, ptr: int, length: int) -> wasmtime.Memory | None:
    """The caller's exported memory if ``[ptr, ptr + length)`` lies inside it."""
    memory = caller.get("memory")
    if not isinstance(memory, wasmtime.Memory) or ptr + length > memory.data_len(caller):
        return None
    return memory


def _store(caller: wasmtime.Caller, ptr: int, data: bytes) -> int:
    memory = _memory(caller, ptr, len(data))
    if memory is None:
        return _ERRNO_FAULT
    if data:
        memory.write(caller, data, ptr)
    return _ERRNO_SUCCESS
