from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.sdk.network import Network, start_network, stop_network


@pytest_asyncio.fixture(scope="session")
async def net(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Network]:
    network = await start_network(tmp_path_factory.mktemp("sdk-net"))
    try:
        yield network
    finally:
        await stop_network(network)
