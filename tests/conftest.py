from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from nuclux.chain import ChainConnection
from tests.chain.world import World, build_world


@pytest_asyncio.fixture(scope="session")
async def world_base() -> AsyncIterator[World]:
    conn = await ChainConnection.open("embedded")
    w = await build_world(conn)
    yield w
    await conn.close()


@pytest_asyncio.fixture
async def world(world_base: World) -> AsyncIterator[World]:
    snap = await world_base.conn.snapshot()
    yield world_base
    await world_base.conn.revert(snap)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
