"""The loop choice: uvloop by default, the standard loop on request, a clear error otherwise."""

from __future__ import annotations

import asyncio

import pytest

from nuclux import aio
from nuclux.errors import ConfigError


async def _loop_type() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_uvloop_by_default_and_asyncio_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(aio.LOOP_ENV, raising=False)
    assert aio.loop_name() == "uvloop"
    assert aio.run(_loop_type()).startswith("uvloop")
    monkeypatch.setenv(aio.LOOP_ENV, "asyncio")
    assert aio.run(_loop_type()).startswith("asyncio")
    assert aio.loop_name("uvloop") == "uvloop"  # an explicit choice wins over the variable


def test_an_unknown_loop_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(aio.LOOP_ENV, "tokio")
    with pytest.raises(ConfigError, match="NUCLUX_LOOP must be one of"):
        aio.loop_name()
