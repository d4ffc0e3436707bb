"""Write-behind for small objects: a packed file's manifest copies are written in the
background, so storing many small files is not one network round trip (and one fsync on a
provider) after another.

``put`` of a packed file returns its reference once the manifest is sealed and its writes are
queued; at most ``limit`` writes run at once (``put`` waits for a slot). ``settle`` (called by
``flush``, so by the end of every CLI command and of ``async with StorageClient``) waits for
all of them and reports the files none of whose copies could be written. Reading one's own
file waits for its pending write first. A client closed without flushing cancels what is
still queued: like the index, unflushed work is not durable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from nuclux.core.reference import Reference
from nuclux.errors import NucluxError


class WriteBehind:
    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._slots: asyncio.Semaphore | None = None
        self._tasks: dict[bytes, asyncio.Task[None]] = {}
        self._failed: dict[bytes, tuple[Reference, str]] = {}

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def submit(self, reference: Reference, write: Coroutine[Any, Any, Any]) -> None:
        """Run ``write`` in the background once a slot is free."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._limit)
        try:
            await self._slots.acquire()
        except BaseException:
            write.close()
            raise
        self._tasks[reference.file_id] = asyncio.create_task(self._run(reference, write))

    async def _run(self, reference: Reference, write: Coroutine[Any, Any, Any]) -> None:
        try:
            await write
        except Exception as err:
            self._failed[reference.file_id] = (reference, str(err) or type(err).__name__)
        finally:
            self._tasks.pop(reference.file_id, None)
            if self._slots is not None:
                self._slots.release()

    async def wait_for(self, file_id: bytes) -> None:
        """Wait for the file's pending write; its failure as a ``NucluxError``."""
        task = self._tasks.get(file_id)
        if task is not None:
            await asyncio.shield(task)
        failed = self._failed.get(file_id)
        if failed is not None:
            raise NucluxError(f"{failed[0]} was not stored: {failed[1]}")

    async def settle(self) -> list[tuple[Reference, str]]:
        """Wait for every pending write; the files that could not be stored (and forget them)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)
        failed, self._failed = list(self._failed.values()), {}
        return failed

    async def cancel(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
