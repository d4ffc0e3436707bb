"""put / get round trips through real nodes: packed and spread files, segment boundaries,
progress reports, bad input."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from nuclux.core.reference import parse_reference
from nuclux.core.spread import network_of
from nuclux.errors import Forbidden, ObjectNotFound, UsageError
from nuclux.sdk import NotEnoughProviders
from nuclux.sdk.reading import open_file
from tests.sdk.network import SETTINGS, Network

SMALL_BLOCKS = dataclasses.replace(SETTINGS, block_bytes=4096, segments_in_flight=2)
SEGMENT = 3 * 4096 - 16  # k = 3 (n = 6 providers): a segment of 3 blocks minus the tag


@pytest.mark.parametrize("size", [0, 1, 4096, 4097, 3 * (1 << 20) + 12345])
async def test_put_get_round_trip(net: Network, tmp_path: Path, size: int) -> None:
    acct = net.world.consumers[0].account
    src = tmp_path / "in.bin"
    data = os.urandom(size)
    src.write_bytes(data)
    async with net.client(acct) as client:
        ref = await client.put(src)
        got = await client.get(ref, tmp_path / "out.bin")
        assert client.warnings == []  # every provider co-signed its revision, and so on
    assert (tmp_path / "out.bin").read_bytes() == data
    assert got.size == size
    assert got.name == "in.bin"
    assert got.corrupt == ()
    assert parse_reference(str(ref)) == ref


@pytest.mark.parametrize(
    "size", [SEGMENT - 1, SEGMENT, SEGMENT + 1, 2 * SEGMENT, 7 * SEGMENT + 5, 40 * SEGMENT - 3]
)
async def test_segment_boundaries(net: Network, tmp_path: Path, size: int) -> None:
    acct = net.world.consumers[0].account
    data = os.urandom(size)
    (tmp_path / "f").write_bytes(data)
    seen: list[tuple[int, int]] = []
    async with net.client(acct, SMALL_BLOCKS) as client:
        ref = await client.put(tmp_path / "f", progress=lambda d, t: seen.append((d, t)))
        assert seen[-1] == (size, size)
        assert [d for d, _ in seen] == sorted(d for d, _ in seen)
        got = await client.get(ref, tmp_path)  # a directory: the stored name inside it
    assert got.path == tmp_path / "f"
    assert got.path.read_bytes() == data


async def test_k_and_n_can_be_chosen(net: Network, tmp_path: Path) -> None:
    acct = net.world.consumers[0].account
    data = os.urandom(50_000)
    (tmp_path / "f").write_bytes(data)
    async with net.client(acct, SMALL_BLOCKS) as client:
        ref = await client.put(tmp_path / "f", k=2, n=4, name="chosen.bin")
        got = await client.get(ref, tmp_path / "out")
        report = await client.audit(ref)
    assert got.name == "chosen.bin"
    assert (tmp_path / "out").read_bytes() == data
    assert len(report.shares) == 4
    assert report.ok


async def test_bad_input_is_refused_before_anything_moves(net: Network, tmp_path: Path) -> None:
    acct = await net.new_account("bad-input")
    ledger = net.ledger(acct)
    nonce = await net.conn.w3.eth.get_transaction_count(acct.address)
    (tmp_path / "f").write_bytes(os.urandom(10_000))
    async with net.client(acct) as client:
        with pytest.raises(UsageError, match="no such file"):
            await client.put(tmp_path / "missing")
        with pytest.raises(UsageError, match="not a regular file"):
            await client.put(tmp_path)
        with pytest.raises(NotEnoughProviders, match="7 providers"):
            await client.put(tmp_path / "f", n=7)
        with pytest.raises(UsageError, match="k < n"):
            await client.put(tmp_path / "f", k=4, n=4)
        with pytest.raises(UsageError, match="positive number of days"):
            await client.put(tmp_path / "f", days=0)
        with pytest.raises(NotEnoughProviders):
            await client.put(tmp_path / "f", max_price=1)  # every provider asks more
        # someone else's file, and a file that does not exist
        other = parse_reference(str(await _someone_elses(net, tmp_path)))
        with pytest.raises(Forbidden, match="belongs to"):
            await client.get(other, tmp_path / "x")
        assert client.transactions == 0
    assert await net.conn.w3.eth.get_transaction_count(acct.address) == nonce
    assert await ledger.balance() > 0
    async with net.client(net.world.consumers[0].account) as owner:
        ghost = dataclasses.replace(other, file_id=bytes(16))
        with pytest.raises(ObjectNotFound):
            await owner.get(ghost, tmp_path / "x")
    assert not (tmp_path / "x").exists()


async def _someone_elses(net: Network, tmp_path: Path) -> object:
    (tmp_path / "theirs").write_bytes(b"theirs")
    async with net.client(net.world.consumers[0].account) as client:
        return await client.put(tmp_path / "theirs")


async def test_shares_spread_across_networks_before_doubling_up(
    net: Network, tmp_path: Path
) -> None:
    # the six nodes are two per /24 network; a new account holds no lease yet, so nothing but
    # price (all equal) and the spread decide where its shares go
    owner = await net.new_account("spread")
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(50_000))
    async with net.client(owner) as client:
        for n in (3, 5):
            ref = await client.put(src, k=2, n=n)
            opened = await open_file(client.ctx, ref)
            assert opened.body.layout is not None
            providers = [s.provider for s in opened.body.layout.shares]
            endpoints = [net.configs[net.index_of(p)].endpoint for p in providers]
            assert len({network_of(e) for e in endpoints}) == 3, endpoints
            assert len(set(providers)) == n
