"""What lease renewals have spent: the running budget behind ``renew_budget``.

A small JSON file, ``{"version": 1, "spent_wei": "<decimal>", "renewals": <count>}``, holds the
total escrow renewals committed for one account on one deployment. Every change is a
read-modify-write under an exclusive ``flock`` on a sibling ``.lock`` file (a CLI call and the
repair watcher may renew at the same time) and is written to a temporary file, synced and
renamed over the old one, so a crash leaves the old total or the new one. A file that cannot
be read is an error naming it, never a silent reset to zero: deleting it is how a user starts
the count again.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from nuclux.core.types import Wei
from nuclux.errors import ConfigError
from nuclux.statefile import atomic_write, locked

VERSION: Final = 1
MAX_BYTES: Final = 4096


class SpendRecord:
    """The total a budget has spent, kept in ``path``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def spent(self) -> Wei:
        """The total recorded (0 if the file does not exist yet: nothing is created)."""
        if not self.path.exists():
            return Wei(0)
        with self._locked():
            return self._read()[0]

    def add(self, amount: int, *, renewals: int = 0) -> Wei:
        """Add ``amount`` wei (negative: give back what was not spent after all); the new
        total, never below zero."""
        with self._locked():
            total, count = self._read()
            total = Wei(max(0, total + amount))
            self._write(total, max(0, count + renewals))
            return total

    def reserve(self, amount: int, limit: int | None) -> bool:
        """Add ``amount`` if the total stays within ``limit`` (None: no limit); whether it
        was added. Checked and written under the lock, so two processes sharing the budget
        cannot both take its last part."""
        with self._locked():
            total, count = self._read()
            if limit is not None and total + amount > limit:
                return False
            self._write(total + amount, count + 1)
            return True

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(locked(self.path))
            except OSError as err:
                raise ConfigError(
                    f"cannot open the renewal spending record {self.path}: {err}"
                ) from err
            yield

    def _read(self) -> tuple[Wei, int]:
        try:
            raw = self.path.read_bytes()[: MAX_BYTES + 1]
        except FileNotFoundError:
            return Wei(0), 0
        except OSError as err:
            raise self._bad(str(err)) from err
        if len(raw) > MAX_BYTES:
            raise self._bad(f"larger than {MAX_BYTES} bytes")
        try:
            data: Any = json.loads(raw)
            if data["version"] != VERSION:
                raise self._bad(f"unknown version {data['version']!r}")
            total, count = int(str(data["spent_wei"])), int(data["renewals"])
        except (ValueError, KeyError, TypeError) as err:
            raise self._bad(f"not a spending record ({type(err).__name__}: {err})") from err
        if total < 0 or count < 0:
            raise self._bad("negative figures")
        return Wei(total), count

    def _write(self, total: int, count: int) -> None:
        data = json.dumps({"version": VERSION, "spent_wei": str(total), "renewals": count})
        try:
            atomic_write(self.path, (data + "\n").encode())
        except OSError as err:
            raise ConfigError(
                f"cannot write the renewal spending record {self.path}: {err}"
            ) from err

    def _bad(self, why: str) -> ConfigError:
        return ConfigError(
            f"the renewal spending record {self.path} is unreadable ({why}); it counts what"
            " renewals spent against renew_budget: repair it, or delete it to start the count"
            " again"
        )
