from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.sdk.network import Network, start_network, stop_network


# One network per test module, stopped when the module ends: its six nodes poll the embedded
# chain in the worker's event loop, so a network left running for the session starved the
# tests that came after it on that worker (a loopback request timed out after 10 s).
@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def net(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Network]:
    network = await start_network(tmp_path_factory.mktemp("sdk-net"))
    try:
        yield network
    finally:
        await stop_network(network)
