"""Small test modules in WebAssembly text, compiled with ``wasmtime.wat2wasm``."""

from __future__ import annotations

from tests.compute.conftest import wat

TRIVIAL = wat('(module (func (export "_start")))')

EXIT_7 = wat(
    """(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (call $exit (i32.const 7))))"""
)

SPIN = wat('(module (memory (export "memory") 1) (func (export "_start") (loop (br 0))))')

GROW_UNTIL_REFUSED = wat(
    """(module
  (memory (export "memory") 1)
  (func (export "_start")
    (loop (br_if 0 (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))
    unreachable))"""
)

HUGE_INITIAL_MEMORY = wat('(module (memory (export "memory") 2000) (func (export "_start")))')

RECURSE = wat('(module (func $f (export "_start") (call $f)))')


def write_forever(fd: int) -> bytes:
    return wat(
        f"""(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "spam spam spam spam\\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 20))
    (loop
      (drop (call $fd_write (i32.const {fd}) (i32.const 0) (i32.const 1) (i32.const 8)))
      (br 0))))"""
    )


UNKNOWN_IMPORT = wat(
    """(module
  (import "env" "system" (func (param i32) (result i32)))
  (import "wasi_snapshot_preview1" "sock_open" (func (param i32) (result i32)))
  (func (export "_start")))"""
)

LIBRARY = wat('(module (func (export "add") (param i32 i32) (result i32) local.get 0))')

START_WITH_PARAMS = wat('(module (func (export "_start") (param i32)))')


def slow_to_compile(branches: int = 6000, locals_: int = 200) -> bytes:
    """A module of ~90 KB (at 6000 branches) whose one function takes cranelift seconds
    of CPU and ~140 MB to compile: many conditional blocks over many live locals."""
    parts = [
        f"(if (i32.wrap_i64 (local.get {i % locals_})) (then (local.set {(i + 1) % locals_}"
        f" (i64.add (local.get {(i * 7) % locals_}) (local.get {(i * 3) % locals_})))))"
        for i in range(branches)
    ]
    keep = " ".join(f"(local.get {i})" for i in range(locals_)) + " (i64.add)" * (locals_ - 1)
    return wat(
        f'(module (func (export "_start") (local {" ".join(["i64"] * locals_)})'
        f" {' '.join(parts)} {keep} drop))"
    )
