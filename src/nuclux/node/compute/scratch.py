"""A job's scratch directory: inputs in, a quota over everything, outputs out, never a link.

Theory of operation
-------------------
Each job gets a directory emptied for it, preopened to the module as ``/`` and holding
nothing else of the host::

    <root>/in/<name>     the inputs (mtime fixed at 0, so listings agree across replicas)
    <root>/out/          empty; the regular files the job leaves here are its outputs

The job may create, rename and delete anything inside. Three things bound what it can do
to the host's disk: ``RLIMIT_FSIZE`` in the worker stops any one file at the quota (the
write fails with EFBIG, the worker ignores SIGXFSZ); ``usage`` is polled while the job runs
and checked once more when it ends, and the job is stopped when all files together pass
``scratch_bytes`` or more than ``MAX_ENTRIES`` names exist. Between two polls a job can
overshoot by what it writes in ``POLL_SECONDS``; nothing beyond the quota is ever
collected.

Walking and collecting never follow a link the job made: directories are opened relative
to their parent's descriptor with ``O_NOFOLLOW``, sizes come from ``lstat``, and an output
is opened ``O_NOFOLLOW | O_NONBLOCK`` and must be a regular file by ``fstat`` of that
descriptor (a symbolic link, a directory or a name outside the naming rule in ``out/`` is
an ``OutputRejected`` naming it). Once the job has ended nothing else writes here, so what
is checked is what is read. Everything is removed with ``shutil.rmtree``, which does not
follow links either.

This module runs in the worker process and imports only the standard library.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Final

MAX_ENTRIES: Final = 4096
POLL_SECONDS: Final = 0.05
NAME: Final = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")  # as nuclux.core.job
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class OutputRejected(Exception):
    """What the job left in ``out/`` breaks the output rules (the message says how)."""


def prepare(root: Path, inputs: Iterable[tuple[str, bytes | bytearray]]) -> None:
    """Make ``root`` hold exactly an empty ``out/`` and ``in/`` with ``inputs``.

    A worker reuses one directory for all its jobs and empties it in place: removing a
    directory can cost milliseconds on some file systems (online discard), a file does not.
    """
    os.makedirs(root, mode=0o700, exist_ok=True)
    reset(root)
    for name, data in inputs:
        if not NAME.fullmatch(name):
            raise ValueError(f"invalid input name {name!r}")
        fd = os.open(
            root / "in" / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600
        )
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.utime(fd, (0, 0))
        finally:
            os.close(fd)


def reset(root: Path) -> None:
    """Leave ``root`` with nothing but empty directories ``in/`` and ``out/``."""
    for name in os.listdir(root):
        path = root / name
        if name in ("in", "out") and stat.S_ISDIR(os.lstat(path).st_mode):
            for inner in os.listdir(path):
                _remove_entry(path / inner)
        else:
            _remove_entry(path)
    for name in ("in", "out"):
        if not (root / name).exists():
            os.mkdir(root / name, 0o700)


def _remove_entry(path: Path) -> None:
    if stat.S_ISDIR(os.lstat(path).st_mode):
        shutil.rmtree(path)  # does not follow links
    else:
        os.unlink(path)


def usage(root: Path, max_entries: int = MAX_ENTRIES) -> tuple[int, int]:
    """(bytes, entries) under ``root``: sizes by lstat, links not followed. Stops counting
    once entries pass ``max_entries`` (the caller then stops the job anyway)."""
    total = entries = 0
    stack = [os.open(root, _DIR_FLAGS)]
    try:
        while stack and entries <= max_entries:
            fd = stack.pop()
            try:
                for name in os.listdir(fd):
                    entries += 1
                    if entries > max_entries:
                        break
                    try:
                        st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                    except FileNotFoundError:  # removed meanwhile
                        continue
                    total += st.st_size
                    if stat.S_ISDIR(st.st_mode):
                        try:
                            stack.append(os.open(name, _DIR_FLAGS, dir_fd=fd))
                        except OSError:  # replaced meanwhile; the final check sees it
                            continue
            finally:
                os.close(fd)
    finally:
        for fd in stack:
            os.close(fd)
    return total, entries


def collect(root: Path, max_count: int, max_bytes: int) -> dict[str, bytes]:
    """The regular files in ``root/out``, bounded; ``OutputRejected`` otherwise."""
    root_fd = os.open(root, _DIR_FLAGS)
    try:
        try:
            out_fd = os.open("out", _DIR_FLAGS, dir_fd=root_fd)
        except FileNotFoundError:
            return {}
        except OSError:
            raise OutputRejected("/out is not a directory (the job replaced it)") from None
    finally:
        os.close(root_fd)
    try:
        names = sorted(os.listdir(out_fd))
        if len(names) > max_count:
            raise OutputRejected(f"{len(names)} entries in /out, at most {max_count} outputs")
        outputs: dict[str, bytes] = {}
        total = 0
        for name in names:
            if not NAME.fullmatch(name):
                raise OutputRejected(
                    f"/out/{name!r}: output names are 1-64 characters of A-Z a-z 0-9 . _ -"
                    " not starting with a dot"
                )
            data = _read_regular(out_fd, name, max_bytes - total)
            total += len(data)
            outputs[name] = data
        return outputs
    finally:
        os.close(out_fd)


def _read_regular(dir_fd: int, name: str, budget: int) -> bytes:
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as err:
        what = "a symbolic link" if err.errno == errno.ELOOP else f"unreadable ({err.strerror})"
        raise OutputRejected(f"/out/{name} is {what}: outputs must be regular files") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OutputRejected(f"/out/{name} is not a regular file: outputs must be")
        if st.st_size > budget:
            raise OutputRejected(
                f"/out/{name} ({st.st_size} bytes) takes the outputs past their cap (output_bytes)"
            )
        chunks, left = [], st.st_size
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def remove(root: Path) -> None:
    """Delete ``root`` and everything in it, following no links; absent is fine."""
    shutil.rmtree(root, ignore_errors=True)
