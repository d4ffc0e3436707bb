"""The event loop Nuclux processes run on: uvloop by default, the standard loop on request.

``bench.node_io`` measured uvloop against the standard loop on this kind of machine (2 cores,
TLS 1.3 on loopback, one node process and one client process): node throughput rose by
roughly a quarter to a half for single-stream writes and reads, with the TLS ceiling itself
higher too (docs/node.md, Figures). ``NUCLUX_LOOP=asyncio`` selects the standard loop (for
debugging, or where uvloop is not installed).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Coroutine, Iterable
from typing import Any, TypeVar

from nuclux.errors import ConfigError

T = TypeVar("T")
LOOP_ENV = "NUCLUX_LOOP"
LOOPS = ("uvloop", "asyncio")


def loop_name(requested: str | None = None) -> str:
    """The loop to use: ``requested``, else $NUCLUX_LOOP, else uvloop if it is installed."""
    name = requested or os.environ.get(LOOP_ENV) or "uvloop"
    if name not in LOOPS:
        raise ConfigError(f"{LOOP_ENV} must be one of {', '.join(LOOPS)}, not {name!r}")
    if name == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            return "asyncio"
    return name


def run(main: Coroutine[Any, Any, T], loop: str | None = None) -> T:
    """``asyncio.run(main)`` on the chosen loop."""
    if loop_name(loop) == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


async def first_of(waits: Iterable[Awaitable[object]], timeout: float) -> None:
    """Wait until the first of ``waits`` is done or ``timeout`` seconds pass; the others are
    cancelled (and awaited) before it returns. A loop's pause between rounds: its stop event,
    a wake-up, the next pushed head (``nuclux.chain.heads``)."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
