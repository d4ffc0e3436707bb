"""A spread file's shares as a download sees them (``Source``), and what went wrong with
them (``BlockFault``, ``DownloadReport``)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from nuclux.net.client import NodeClient


@dataclass(slots=True)
class Source:
    """Share ``share`` of a file as one provider serves it."""

    share: int
    provider: str
    lease_id: int
    client: NodeClient
    root: bytes  # the share root from the manifest
    capability: str | None = None
    roots: tuple[bytes, ...] | None = None
    roots_task: asyncio.Task[tuple[bytes, ...] | None] | None = None
    latency: float = 0.0
    slow: bool = False
    dead: str | None = None


def silence(src: Source) -> int:
    """0 for a source that has answered its roots request (or has no roots to give), 1 while
    it has not answered, 2 if the request failed."""
    task = src.roots_task
    if src.roots is not None or task is None:
        return 0
    if not task.done():
        return 1
    return 2 if task.cancelled() or task.exception() is not None else 0


@dataclass(frozen=True, slots=True)
class BlockFault:
    """A block (or, with ``segment`` None, a whole share) that could not be used."""

    share: int
    provider: str
    segment: int | None
    reason: str


@dataclass(slots=True)
class DownloadReport:
    corrupt: list[BlockFault] = field(default_factory=list)
    unavailable: list[BlockFault] = field(default_factory=list)
    hedges: int = 0
