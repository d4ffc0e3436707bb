"""Faults: providers stopped, a corrupt block on a provider's disk, a provider failing during
an upload, a hung provider; the download succeeds, names the culprit and leaves no partial
file when it cannot."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from nuclux.core.reference import Reference
from nuclux.net.client import NodeClient
from nuclux.sdk import NotEnoughProviders, StorageClient
from nuclux.sdk.download import Downloader
from nuclux.sdk.leases import Placement
from nuclux.sdk.nodeapi import block_object_id
from nuclux.sdk.reading import open_file
from tests.sdk.network import SETTINGS, Network

BLOCKS = dataclasses.replace(SETTINGS, block_bytes=16 << 10)


def random_file(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


async def _put(client: StorageClient, path: Path, size: int) -> tuple[Reference, bytes]:
    data = random_file(path, size)
    return await client.put(path), data


async def _providers(client: StorageClient, ref: Reference) -> list[str]:
    opened = await open_file(client.ctx, ref)
    assert opened.body.layout is not None
    return [s.provider for s in opened.body.layout.shares]


@asynccontextmanager
async def stopped(net: Network, providers: list[str]) -> AsyncIterator[None]:
    indexes = [net.index_of(p) for p in providers]
    for i in indexes:
        await net.stop(i)
    try:
        yield
    finally:
        for i in indexes:
            await net.start(i)


async def test_any_n_minus_k_providers_stopped(net: Network, tmp_path: Path) -> None:
    acct = net.world.consumers[1].account
    async with net.client(acct, BLOCKS) as client:
        ref, data = await _put(client, tmp_path / "f", 300_000)
        shares = await _providers(client, ref)
    assert len(shares) == 6
    # the data shares (a reader's first choice), then a mix of data and parity shares
    for down in (shares[:3], shares[1::2]):
        async with stopped(net, down), net.client(acct, BLOCKS) as client:
            got = await client.get(ref, tmp_path / "out")
            assert (tmp_path / "out").read_bytes() == data
            assert {f.provider for f in got.unavailable} <= set(down)
            entries = {e.reference: e for e in await client.ls(check=True)}
            assert entries[ref].status == "degraded"
            assert entries[ref].healthy == 3
            assert entries[ref].at_risk
    # one more than n - k: the file cannot be read, and no partial file is left behind
    (tmp_path / "out").unlink()
    async with stopped(net, shares[2:]), net.client(acct, BLOCKS) as client:
        with pytest.raises(NotEnoughProviders, match="blocks needed"):
            await client.get(ref, tmp_path / "out")
    assert os.listdir(tmp_path) == ["f"]


def _blob(net: Network, provider: str, info: Any) -> Path:
    rt = net.node_of(provider)
    sha = info.sha256.hex()
    hits = [p for p in rt.cfg.store_dir.rglob(sha)]
    assert len(hits) == 1, hits
    return hits[0]


async def test_a_corrupt_block_names_its_provider(
    net: Network, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the reader ranks sources by how fast they answered; in-process nodes share the test's
    # event loop, so the corrupt share is put first rather than left to that race
    real_ranked = Downloader._ranked
    monkeypatch.setattr(
        Downloader, "_ranked", lambda self: sorted(real_ranked(self), key=lambda s: s.share != 1)
    )
    acct = net.world.consumers[1].account
    async with net.client(acct, BLOCKS) as client:
        ref, data = await _put(client, tmp_path / "f", 200_000)
        opened = await open_file(client.ctx, ref)
        assert opened.body.layout is not None
        share = opened.body.layout.shares[1]  # a data share, read first (above)
        rt = net.node_of(share.provider)
        info = await rt.store.stat(share.lease_id, block_object_id(ref.file_id, 1, 2))
        blob = _blob(net, share.provider, info)
        raw = bytearray(blob.read_bytes())
        raw[100] ^= 0x01
        os.chmod(blob, 0o644)
        blob.write_bytes(bytes(raw))
        got = await client.get(ref, tmp_path / "out")
        assert (tmp_path / "out").read_bytes() == data
        assert [(f.share, f.provider, f.segment) for f in got.corrupt] == [(1, share.provider, 2)]
        report = await client.audit(ref)
    verdicts = {s.share: s.status for s in report.shares}
    assert verdicts[1] == "corrupt" or 2 not in report.segments
    assert all(v == "ok" for i, v in verdicts.items() if i != 1)


async def test_a_provider_failing_during_the_upload_is_replaced(
    net: Network, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    acct = net.world.consumers[1].account
    victim: list[int] = []
    async with net.client(acct, BLOCKS) as client:
        real = client.ctx.leases.ensure

        async def ensure_then_fail(*args: Any, **kwargs: Any) -> list[Placement]:
            placed = await real(*args, **kwargs)
            if not victim and len(placed) == 5:  # the upload's placements: stop the first
                victim.append(net.index_of(placed[0].provider.owner))
                await net.stop(victim[0])
            return placed

        monkeypatch.setattr(client.ctx.leases, "ensure", ensure_then_fail)
        try:
            ref, data = await _put_n(client, tmp_path / "f", 150_000, n=5)
        finally:
            await net.start(victim[0])
        shares = await _providers(client, ref)
        await client.get(ref, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data
    assert net.configs[victim[0]].owner not in shares
    assert len(set(shares)) == 5


async def _put_n(client: StorageClient, path: Path, size: int, n: int) -> tuple[Reference, bytes]:
    data = random_file(path, size)
    return await client.put(path, n=n, k=2), data


@asynccontextmanager
async def hung(net: Network, provider: str) -> AsyncIterator[None]:
    """The provider's node replaced by a listener that accepts connections and never answers."""
    i = net.index_of(provider)
    await net.stop(i)
    writers: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.read()  # until the client gives up

    cfg = net.configs[i]
    server = await asyncio.start_server(swallow, cfg.listen_host, cfg.listen_port)
    try:
        yield
    finally:
        server.close()
        for w in writers:
            w.close()
        await server.wait_closed()
        await net.start(i)


async def test_hung_providers_are_never_asked_for_a_block(net: Network, tmp_path: Path) -> None:
    """Hung before the download starts: the roots race finds the k that answer, and no block
    request waits on a hung provider (no hedge needed)."""
    acct = net.world.consumers[1].account
    async with net.client(acct, BLOCKS) as client:
        ref, data = await _put(client, tmp_path / "f", 200_000)
        shares = await _providers(client, ref)
    # only the race helps; it waits for k answers up to hedge_delay, which the test network's
    # 0.3 s may not cover on a loaded machine (in-process nodes share the test's loop)
    settings = dataclasses.replace(BLOCKS, request_timeout=30.0, hedge_delay=3.0)
    async with AsyncExitStack() as stack:
        for provider in shares[:3]:  # n - k of them, the data shares a reader would ask first
            await stack.enter_async_context(hung(net, provider))
        async with net.client(acct, settings) as client:
            got = await client.get(ref, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data
    assert got.hedges == 0


async def test_providers_hanging_mid_download_are_hedged(
    net: Network, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Providers that answered the roots request and then stop answering block requests:
    each overdue block is asked of another provider after hedge_delay."""
    acct = net.world.consumers[1].account
    async with net.client(acct, BLOCKS) as client:
        ref, data = await _put(client, tmp_path / "f", 200_000)
        shares = await _providers(client, ref)
    ports = {net.configs[net.index_of(p)].listen_port for p in shares[:3]}
    real_get, real_into, real_shares = NodeClient.get, NodeClient.get_into, NodeClient.shares

    async def get_or_hang(self: NodeClient, *args: Any, **kwargs: Any) -> bytes:
        if self.base.port in ports:
            await asyncio.Event().wait()  # cancelled by the hedge's winner
        return await real_get(self, *args, **kwargs)

    async def get_into_or_hang(self: NodeClient, *args: Any, **kwargs: Any) -> int:
        if self.base.port in ports:  # data shares are read into the segment's buffer
            await asyncio.Event().wait()
        return await real_into(self, *args, **kwargs)

    async def shares_first(self: NodeClient, *args: Any, **kwargs: Any) -> Any:
        if self.base.port not in ports:  # the doomed ones win the roots race
            await asyncio.sleep(0.2)
        return await real_shares(self, *args, **kwargs)

    monkeypatch.setattr(NodeClient, "get", get_or_hang)
    monkeypatch.setattr(NodeClient, "get_into", get_into_or_hang)
    monkeypatch.setattr(NodeClient, "shares", shares_first)
    settings = dataclasses.replace(BLOCKS, request_timeout=30.0)  # only hedging helps
    async with net.client(acct, settings) as client:
        got = await client.get(ref, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data
    assert got.hedges >= 3


async def test_a_provider_hanging_during_the_upload_is_replaced(
    net: Network, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    acct = net.world.consumers[1].account
    settings = dataclasses.replace(BLOCKS, request_timeout=30.0, lag_timeout=1.0)
    stuck: list[str] = []
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(net.client(acct, settings))
        real = client.ctx.leases.ensure

        async def ensure_then_hang(*args: Any, **kwargs: Any) -> list[Placement]:
            placed = await real(*args, **kwargs)
            if not stuck and len(placed) == 5:  # the upload's placements: one hangs
                stuck.append(placed[2].provider.owner)
                await stack.enter_async_context(hung(net, stuck[0]))
            return placed

        monkeypatch.setattr(client.ctx.leases, "ensure", ensure_then_hang)
        ref, data = await _put_n(client, tmp_path / "f", 150_000, n=5)
        shares = await _providers(client, ref)
    assert stuck[0] not in shares
    async with net.client(acct, BLOCKS) as client:
        await client.get(ref, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data
