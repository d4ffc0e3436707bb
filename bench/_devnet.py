"""A devnet (anvil, contracts deployed) with provider nodes as separate processes, for the
benches that measure a multi-process network; everything stopped by PID on the way out."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from nuclux.chain import DeployParams
from nuclux.chain.devnet import devnet_down, devnet_up
from nuclux.node.localnet import LocalNode, start_nodes, stop_nodes


@contextlib.asynccontextmanager
async def network(
    state: Path, nodes: int, *, epoch: int, **node_options: Any
) -> AsyncIterator[tuple[str, list[LocalNode]]]:
    """``(rpc url, nodes)``: a devnet of ``epoch``-second epochs (devnet accounts 1 and 2
    funded) in ``state`` and ``nodes`` provider nodes (``start_nodes`` options as given)."""
    info = await devnet_up(state, params=DeployParams(epoch_length=epoch), funded=2)
    try:
        started: list[LocalNode] = []
        try:
            started = await start_nodes(state, nodes, **node_options)
            yield info.rpc_url, started
        finally:
            await asyncio.wait_for(stop_nodes(state), 90)  # every recorded node, by PID
    finally:
        await asyncio.wait_for(devnet_down(state), 60)
