"""The file index in format 2 on real nodes: more files than format 1 could hold, a second
device, a write that re-sends only the page it changes, torn copies passed over, an index
written by an earlier release moved over, and retired pages deleted an hour later."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from nuclux.core.file_index import Change, FileIndex, IndexEntry, seal_pages
from nuclux.core.index_tree import (
    RETIRE_AFTER,
    IndexHead,
    open_head,
    seal_head,
    seal_page,
)
from nuclux.core.reference import index_object_id, index_page_object_id
from nuclux.core.types import LeaseId
from nuclux.errors import UsageError
from nuclux.sdk import StorageClient
from nuclux.sdk.settings import INDEX_COPIES
from tests.sdk.network import Network
from tests.sdk.test_index import index_objects_held, write_files


def entry(i: int, lease: LeaseId, name: str = "photos/{i:05d}.jpg") -> IndexEntry:
    fid = hashlib.sha256(b"paged/%d" % i).digest()[:16]
    return IndexEntry(fid, name.format(i=i), i, 1_700_000_000, 1, (lease, lease, lease))


async def started(net: Network, label: str, tmp_path: Path) -> tuple[StorageClient, LeaseId]:
    """A client of a new account whose first file opened its leases."""
    client = net.client(await net.new_account(label))
    await client.put(write_files(tmp_path, 1, 100)[0])
    return client, LeaseId((await client.ctx.leases.mine())[0].id)


async def read_fresh(net: Network, acct: LocalAccount) -> FileIndex:
    """The index as a device that knows only the account's key sees it."""
    device = net.client(acct)
    try:
        return await device.ctx.index.current()
    finally:
        await device.close()


async def heads(net: Network, client: StorageClient) -> dict[int, IndexHead]:
    out = {}
    key = client.ctx.index._key
    for lid, ids in (await index_objects_held(net, client)).items():
        if index_object_id(0) in ids:
            _, node = await client.ctx.peers.client_for_lease(lid)
            data = await node.get(lid, index_object_id(0))
            out[lid] = open_head(data, owner=client.ctx.keys.address, key=key)
    return out


async def test_more_files_than_format_1_held_and_one_page_per_change(
    net: Network, tmp_path: Path
) -> None:
    laptop, lease = await started(net, "index-30k", tmp_path)
    keys = laptop.ctx.keys
    try:
        for i in range(30_000):  # entries straight into the store: 30,000 files are slow
            laptop.ctx.index.put(entry(i, lease))
        await laptop.flush()
        written = await laptop.ctx.index.current()
        before = await heads(net, laptop)
        held = await index_objects_held(net, laptop)
    finally:
        await laptop.close()
    assert len(written.entries) == 30_001
    with pytest.raises(UsageError, match="MAX_PAGES"):  # beyond what format 1 holds
        seal_pages(written, x25519_private=keys.x25519_private, write_id=bytes(8))
    assert 2 <= len(before) <= INDEX_COPIES
    (head,) = {h.digest: h for h in before.values()}.values()  # every copy the same head
    assert head.entries == 30_001
    assert len(head.pages) > 63
    for lid, ids in held.items():  # each copy whole: its head and every page it names
        assert set(ids) == {index_object_id(0)} | {
            index_page_object_id(p.name) for p in head.pages
        }, lid

    phone = net.client(laptop_account(net, laptop))
    try:
        assert await phone.ctx.index.current() == written  # a second device: only the key
        phone.ctx.index.put(entry(99_999, lease, "new.txt"))
        await phone.flush()
        after = await heads(net, phone)
        changed = await phone.ctx.index.current()
    finally:
        await phone.close()
    assert len(changed.entries) == 30_002
    assert changed.counter == written.counter + 1
    (new_head,) = {h.digest: h for h in after.values()}.values()
    old_names = {p.name for p in head.pages}
    fresh = [p for p in new_head.pages if p.name not in old_names]
    assert 1 <= len(fresh) <= 2  # the page the new file falls in, split if it was full
    assert len(old_names - {p.name for p in new_head.pages}) == 1
    assert [r.name for r in new_head.retired] == sorted(
        old_names - {p.name for p in new_head.pages}
    )
    assert await read_fresh(net, laptop_account(net, laptop)) == changed


def laptop_account(net: Network, client: StorageClient) -> LocalAccount:
    account: LocalAccount = Account.from_key(client.ctx.keys.eth_private_key)
    return account


async def test_a_torn_copy_is_passed_over(net: Network, tmp_path: Path) -> None:
    """A head whose page no lease serves (a provider serving a head it was never given
    pages for, or pages deleted under it): the whole older copies decide."""
    laptop, lease = await started(net, "index-torn", tmp_path)
    try:
        for i in range(50):
            laptop.ctx.index.put(entry(i, lease))
        await laptop.flush()
        written = await laptop.ctx.index.current()
        before = await heads(net, laptop)
        key, owner = laptop.ctx.index._key, laptop.ctx.keys.address
        lid = sorted(before)[0]
        ref, _ = seal_page(owner, (entry(100, lease),), key=key, nonce=os.urandom(12))
        head = before[lid]
        torn = IndexHead(head.owner, head.counter + 5, head.written_at, (*head.pages, ref)[-1:])
        _, node = await laptop.ctx.peers.client_for_lease(lid)
        await node.put(lid, index_object_id(0), seal_head(torn, key=key, nonce=os.urandom(12)))
        assert await read_fresh(net, laptop_account(net, laptop)) == written
        # a flush builds on the whole copy, not on the torn one, and writes over it
        laptop.ctx.index.put(entry(200, lease))
        await laptop.flush()
        after = await heads(net, laptop)
    finally:
        await laptop.close()
    assert {h.counter for h in after.values()} == {written.counter + 1}
    got = await read_fresh(net, laptop_account(net, laptop))
    assert len(got.entries) == 52


async def test_an_index_of_an_earlier_release_moves_to_format_2(
    net: Network, tmp_path: Path
) -> None:
    laptop, lease = await started(net, "index-v1", tmp_path)
    try:
        await laptop.flush()
        x = laptop.ctx.keys.x25519_private
        held = await index_objects_held(net, laptop)
        ordered = sorted((entry(i, lease) for i in range(2000)), key=lambda e: e.file_id)
        old = FileIndex(laptop.ctx.index.owner, 7, tuple(ordered))
        pages = seal_pages(old, x25519_private=x, write_id=os.urandom(8))
        assert len(pages) == 5
        for lid in held:  # as an earlier release wrote it: i/0 .. i/4 in one batch
            _, node = await laptop.ctx.peers.client_for_lease(lid)
            await node.delete(lid, index_object_id(0))
            await node.put_batch(lid, [(index_object_id(p), d) for p, d in enumerate(pages)])
    finally:
        await laptop.close()
    assert await read_fresh(net, laptop_account(net, laptop)) == old
    device = net.client(laptop_account(net, laptop))
    try:
        device.ctx.index.put(entry(5000, lease, "moved.txt"))
        await device.flush()
        after = await heads(net, device)
        objects = await index_objects_held(net, device)
    finally:
        await device.close()
    assert after
    assert {h.counter for h in after.values()} == {8}
    for lid in held:  # the old pages are gone from every lease that held them
        assert not {index_object_id(p) for p in range(1, 5)} & set(objects.get(lid, [])), lid
    got = await read_fresh(net, laptop_account(net, laptop))
    assert got.counter == 8
    assert len(got.entries) == 2001


async def test_retired_pages_are_deleted_an_hour_later(net: Network, tmp_path: Path) -> None:
    laptop, lease = await started(net, "index-retire", tmp_path)
    now = [1_800_000_000.0]
    laptop.ctx.index._clock = lambda: now[0]
    try:
        laptop.ctx.index.put(entry(1, lease))
        await laptop.flush()
        first = await heads(net, laptop)
        names = {p.name for h in first.values() for p in h.pages}
        laptop.ctx.index.put(entry(2, lease))  # the same single page, sealed anew
        now[0] += 10
        await laptop.flush()
        held = await index_objects_held(net, laptop)
        assert all(index_page_object_id(n) in ids for ids in held.values() for n in names)
        now[0] += RETIRE_AFTER
        laptop.ctx.index.put(entry(3, lease))
        await laptop.flush()
        held = await index_objects_held(net, laptop)
        last = await heads(net, laptop)
        index = await laptop.ctx.index.current()
    finally:
        await laptop.close()
    for lid, ids in held.items():  # the first page is gone; the second still retired
        assert not any(index_page_object_id(n) in ids for n in names), lid
        assert len([i for i in ids if i.startswith(b"i/p/")]) == 2
    assert {len(h.retired) for h in last.values()} == {1}
    assert len(index.entries) == 4


async def test_two_devices_writing_at_once_leave_one_whole_index(
    net: Network, tmp_path: Path
) -> None:
    """Both read the same copy and write at once: every device then reads the same one of the
    two writes, whole (the other device's change is to be made again, as in format 1)."""
    laptop, lease = await started(net, "index-race", tmp_path)
    acct = laptop_account(net, laptop)
    try:
        for i in range(2000):
            laptop.ctx.index.put(entry(i, lease))
        await laptop.flush()
        base = await laptop.ctx.index.current()
    finally:
        await laptop.close()
    a, b = net.client(acct), net.client(acct)
    try:
        a.ctx.index.put(entry(5000, lease, "from-a.txt"))
        a.ctx.index.remove(entry(3, lease).file_id)
        b.ctx.index.put(entry(6000, lease, "from-b.txt"))
        b.ctx.index.put(entry(7, lease, "renamed-by-b.txt"))
        await asyncio.gather(a.ctx.index.flush(), b.ctx.index.flush())
    finally:
        await asyncio.gather(a.close(), b.close())
    ops_a: list[Change] = [entry(5000, lease, "from-a.txt"), entry(3, lease).file_id]
    ops_b: list[Change] = [entry(6000, lease, "from-b.txt"), entry(7, lease, "renamed-by-b.txt")]
    whole = [base.apply(ops_a), base.apply(ops_b)]  # either write, whole
    whole += [base.apply(ops_a + ops_b), base.apply(ops_b + ops_a)]  # or one after the other
    seen = [await read_fresh(net, acct) for _ in range(3)]
    assert seen[0] in whole
    assert seen[1] == seen[0]
    assert seen[2] == seen[0]
