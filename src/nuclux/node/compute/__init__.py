"""Provider-side compute: WASI jobs in a sandbox of killable worker processes.

``ComputePool`` (``pool``) is the node's API; ``sandbox`` and ``worker`` run inside the
worker processes; ``docs/compute.md`` describes the design and its limits.

The names below load on first use: a worker process imports this package too, and must
not pay for the pool's imports (the signing and encoding stack) when it starts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nuclux.node.compute.config import PoolLimits
    from nuclux.node.compute.pool import ComputePool

__all__ = ["ComputePool", "PoolLimits"]


def __getattr__(name: str) -> Any:
    if name == "ComputePool":
        from nuclux.node.compute.pool import ComputePool

        return ComputePool
    if name == "PoolLimits":
        from nuclux.node.compute.config import PoolLimits

        return PoolLimits
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
