"""The file index and leases: the same files from any device with the seed, no transaction
per file once leases exist, removal, and copies of a newer format never written over (the
paged index: ``test_index_pages``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pytest
from eth_account import Account

from nuclux.core.reference import index_object_id
from nuclux.errors import NucluxError, ObjectNotFound, StoreError
from nuclux.keys.derive import from_mnemonic, generate_mnemonic
from nuclux.net.client import NodeClient, StoredObject
from nuclux.sdk import StorageClient
from nuclux.sdk.index import IndexUnreadable
from nuclux.sdk.reading import open_file
from tests.sdk.network import SETTINGS, Network


def write_files(tmp: Path, count: int, size: int) -> list[Path]:
    paths = []
    for i in range(count):
        p = tmp / f"file{i:03d}.txt"
        p.write_bytes(os.urandom(size))
        paths.append(p)
    return paths


async def test_small_files_cost_no_transaction_each(net: Network, tmp_path: Path) -> None:
    acct = await net.new_account("many-small")
    files = write_files(tmp_path, 51, 1000)
    async with net.client(acct) as client:
        await client.put(files[0])  # the account's first file opens its leases
        opened = client.transactions
        nonce = await net.conn.w3.eth.get_transaction_count(acct.address)
        refs = [await client.put(p) for p in files[1:]]
        assert client.transactions == opened
        assert await net.conn.w3.eth.get_transaction_count(acct.address) == nonce
    # leaving the client flushes: the index is written and the 50 manifests are time-stamped
    # by one anchor transaction
    assert await net.conn.w3.eth.get_transaction_count(acct.address) == nonce + 1
    async with net.client(acct) as client:
        listed = {e.reference for e in await client.ls()}
        assert set(refs) <= listed
        await client.get(refs[-1], tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == files[-1].read_bytes()


async def test_ls_from_a_second_device_and_rm(net: Network, tmp_path: Path) -> None:
    phrase = generate_mnemonic(os.urandom(16))
    keys = from_mnemonic(phrase)
    me = await net.fund(Account.from_key(keys.eth_private_key))
    small, big = write_files(tmp_path, 1, 2000)[0], tmp_path / "big.bin"
    big.write_bytes(os.urandom(120_000))
    laptop = StorageClient(net.ledger(me), keys, SETTINGS)
    async with laptop:
        ref_small = await laptop.put(small)
        ref_big = await laptop.put(big, name="big one")
    # a second device: nothing but the phrase
    phone = StorageClient(net.ledger(me), from_mnemonic(phrase), SETTINGS)
    async with phone:
        entries = {e.reference: e for e in await phone.ls(check=True)}
        assert set(entries) == {ref_small, ref_big}
        assert entries[ref_big].name == "big one"
        assert entries[ref_big].size == 120_000
        assert entries[ref_big].status == "healthy"
        assert entries[ref_big].healthy == entries[ref_big].total == 6
        assert entries[ref_small].status == "healthy"
        # a one-day term (the test default) ends within the three days that count as risk
        ends = entries[ref_big].expires_at
        assert ends is not None
        assert ends > await net.conn.now()
        assert entries[ref_big].at_risk
        opened = await open_file(phone.ctx, ref_big)
        assert opened.body.layout is not None
        for i, share in enumerate(opened.body.layout.shares):  # each provider co-signed it
            _, node = await phone.ctx.peers.client_for_lease(share.lease_id)
            latest = await node.latest_revision(share.lease_id)
            assert latest is not None
            assert (ref_big.file_id, i) in latest.shares
        removed = await phone.rm(ref_big)
        assert removed.problems == ()
        await phone.rm(ref_small)
        with pytest.raises(ObjectNotFound):
            await phone.get(ref_big, tmp_path / "x")
    async with laptop.__class__(net.ledger(me), keys, SETTINGS) as again:
        assert await again.ls() == []
    # nothing of the file is left on its providers
    for share in opened.body.layout.shares:
        rt = net.node_of(share.provider)
        objects = await rt.store.list_objects(share.lease_id, after=None, limit=1000)
        prefix = b"f/" + ref_big.file_id.hex().encode()
        assert not [o for o in objects if o.object_id.startswith(prefix)]


async def test_a_packed_file_not_stored_fails_the_flush(
    net: Network, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    acct = net.world.consumers[0].account
    kept, lost = write_files(tmp_path, 2, 100)
    client = net.client(acct)
    try:
        ref_kept = await client.put(kept)
        await client.flush()

        real = NodeClient.put_batch

        async def refuse_manifests(
            self: NodeClient, lease_id: int, items: Sequence[tuple[bytes, bytes]]
        ) -> list[StoredObject]:
            if any(object_id.endswith(b"/m") for object_id, _ in items):
                raise StoreError("the disk is full")  # manifests travel in batches
            return await real(self, lease_id, items)

        monkeypatch.setattr(NodeClient, "put_batch", refuse_manifests)
        ref_lost = await client.put(lost)  # queued: packed files are written behind
        with pytest.raises(NucluxError, match=r"could not be stored.*disk is full"):
            await client.flush()
        monkeypatch.undo()
        listed = {e.reference for e in await client.ls()}
        assert ref_kept in listed
        assert ref_lost not in listed
    finally:
        await client.close()


async def index_objects_held(net: Network, client: StorageClient) -> dict[int, list[bytes]]:
    """The file index objects on each of the account's leases that holds any."""
    held: dict[int, list[bytes]] = {}
    for lease in await client.ctx.leases.mine():
        objects = await net.node_of(lease.provider).store.list_objects(lease.id, limit=1000)
        ids = [o.object_id for o in objects if o.object_id.startswith(b"i/")]
        if ids:
            held[lease.id] = ids
    return held


async def test_copies_this_version_cannot_open_are_never_written_over(
    net: Network, tmp_path: Path
) -> None:
    """Every copy of the index in a format this version cannot read (a newer Nuclux wrote
    it): reading says so, and a flush changes none of them (starting from an empty index
    would hide the account's files)."""
    acct = await net.new_account("newer-index")
    laptop = net.client(acct)
    try:
        await laptop.put(write_files(tmp_path, 1, 100)[0])
        await laptop.flush()
        held = await index_objects_held(net, laptop)
        newer: dict[int, bytes] = {}
        for lid in held:  # the same copy, as if written by a format-3 writer
            _, node = await laptop.ctx.peers.client_for_lease(lid)
            page = await node.get(lid, index_object_id(0))
            newer[lid] = bytes([3]) + page[1:]
            await node.put(lid, index_object_id(0), newer[lid])
    finally:
        await laptop.close()
    device = net.client(acct)
    try:
        with pytest.raises(IndexUnreadable, match=r"no copy opens.*upgrade"):
            await device.ctx.index.current()
        (tmp_path / "more").mkdir()
        await device.put(write_files(tmp_path / "more", 1, 100)[0])  # the data goes in
        with pytest.raises(IndexUnreadable):
            await device.flush()
        for lid, data in newer.items():
            _, node = await device.ctx.peers.client_for_lease(lid)
            assert await node.get(lid, index_object_id(0)) == data  # untouched
    finally:
        await device.close()
