"""The leftovers record: removals a provider did not answer, kept until a sweep does them
(``nuclux.sdk.leftovers`` explains both)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, TypeVar

from nuclux.errors import ConfigError
from nuclux.statefile import atomic_write, locked

VERSION: Final = 1
MAX_BYTES: Final = 4 << 20
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Leftover:
    """Shares of ``file_id`` to drop from lease ``lease_id``'s revision and objects to delete
    from it, since ``since`` (unix time)."""

    lease_id: int
    file_id: bytes
    shares: tuple[int, ...] = ()
    objects: tuple[bytes, ...] = ()
    since: int = 0

    def merged(self, other: Leftover) -> Leftover:
        return replace(
            self,
            shares=tuple(sorted({*self.shares, *other.shares})),
            objects=tuple(sorted({*self.objects, *other.objects})),
        )


class LeftoverRecord:
    """The account's leftovers, in ``path`` (None: in memory)."""

    def __init__(self, path: str | None) -> None:
        self.path = None if path is None else Path(path)
        self._memory: dict[tuple[int, bytes], Leftover] = {}

    def add(self, item: Leftover) -> None:
        if not item.shares and not item.objects:
            return
        item = replace(item, since=item.since or int(time.time()))
        with self._changing() as items:
            key = (item.lease_id, item.file_id)
            items[key] = items[key].merged(item) if key in items else item

    def settle(self, done: Leftover) -> None:
        """``done`` was swept: drop it, keeping anything added for the same lease and file
        since the sweep read the record."""
        with self._changing() as items:
            key = (done.lease_id, done.file_id)
            now = items.pop(key, None)
            if now is None:
                return
            left = Leftover(
                done.lease_id,
                done.file_id,
                tuple(s for s in now.shares if s not in done.shares),
                tuple(o for o in now.objects if o not in done.objects),
                now.since,
            )
            if left.shares or left.objects:
                items[key] = left

    def pending(self, file_id: bytes | None = None) -> list[Leftover]:
        path = self.path
        items = self._memory if path is None else self._guarded(lambda: self._read(path))
        return [v for v in items.values() if file_id is None or v.file_id == file_id]

    @contextlib.contextmanager
    def _changing(self) -> Iterator[dict[tuple[int, bytes], Leftover]]:
        if self.path is None:
            yield self._memory
            return
        path = self.path
        with contextlib.ExitStack() as stack:
            self._guarded(lambda: stack.enter_context(locked(path)))
            items = self._read(path)
            yield items
            self._guarded(lambda: atomic_write(path, self._encode(items)))

    def _guarded(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except OSError as err:
            raise ConfigError(f"cannot use the leftovers record {self.path}: {err}") from err

    def _read(self, path: Path) -> dict[tuple[int, bytes], Leftover]:
        try:
            raw = path.read_bytes()[: MAX_BYTES + 1]
        except FileNotFoundError:
            return {}
        if len(raw) > MAX_BYTES:
            raise self._bad(f"larger than {MAX_BYTES} bytes")
        try:
            data = json.loads(raw)
            if data["version"] != VERSION:
                raise self._bad(f"unknown version {data['version']!r}")
            items = [
                Leftover(
                    int(d["lease"]),
                    bytes.fromhex(d["file_id"]),
                    tuple(int(s) for s in d["shares"]),
                    tuple(bytes.fromhex(o) for o in d["objects"]),
                    int(d["since"]),
                )
                for d in data["leftovers"]
            ]
        except (ValueError, KeyError, TypeError) as err:
            raise self._bad(f"not a leftovers record ({type(err).__name__}: {err})") from err
        return {(i.lease_id, i.file_id): i for i in items}

    @staticmethod
    def _encode(items: dict[tuple[int, bytes], Leftover]) -> bytes:
        rows = [
            {
                "lease": i.lease_id,
                "file_id": i.file_id.hex(),
                "shares": list(i.shares),
                "objects": [o.hex() for o in i.objects],
                "since": i.since,
            }
            for i in sorted(items.values(), key=lambda i: (i.lease_id, i.file_id))
        ]
        return (json.dumps({"version": VERSION, "leftovers": rows}, indent=1) + "\n").encode()

    def _bad(self, why: str) -> ConfigError:
        return ConfigError(
            f"the leftovers record {self.path} is unreadable ({why}); it lists data to remove"
            " from providers that did not answer: repair it, or delete it to forget them"
        )
