"""Small files' objects (manifest copies, time-stamp proofs) travel in batches per lease."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path

import pytest

from nuclux.net.client import NodeClient, StoredObject
from nuclux.sdk.batcher import Batcher
from nuclux.sdk.nodeapi import block_object_id
from tests.sdk.network import Network


async def test_many_small_files_cost_few_requests(
    net: Network, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[int] = []
    real = NodeClient.put_batch

    async def counted(
        self: NodeClient, lease_id: int, items: Sequence[tuple[bytes, bytes]]
    ) -> list[StoredObject]:
        if not any(oid.startswith(b"i/") for oid, _ in items):  # the file index's own batch
            batches.append(len(items))
        return await real(self, lease_id, items)

    monkeypatch.setattr(NodeClient, "put_batch", counted)
    acct = await net.new_account("batching")
    files = {f"s{i}.txt": os.urandom(1000 + i) for i in range(60)}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    async with net.client(acct) as client:
        refs = {name: await client.put(tmp_path / name) for name in files}
        flushed = await client.flush()
        assert flushed.anchored is not None
        assert flushed.anchored.problems == ()
        objects = sum(batches)
        # 60 files x 3 manifest copies + 60 x 3 time-stamp proofs, in far fewer requests
        assert objects == 360
        assert len(batches) < objects / 4
        for name in ("s0.txt", "s59.txt"):
            got = await client.get(refs[name], tmp_path / f"{name}.out")
            assert got.path.read_bytes() == files[name]
            stamp = await client.verify_timestamp(tmp_path / name, refs[name])
            assert stamp.version == 1


async def test_a_failed_batch_fails_each_of_its_writes(net: Network, tmp_path: Path) -> None:
    acct = await net.new_account("batch-fails")
    (tmp_path / "tiny").write_bytes(b"opens the account's leases")
    async with net.client(acct) as client:
        await client.put(tmp_path / "tiny")
        lease = (await client.ctx.leases.mine())[0]
        _, node = await client.ctx.peers.client_for_lease(lease.id)
        batcher = Batcher(timeout=5.0)
        try:
            ok = asyncio.gather(
                *(batcher.put(lease.id, node, f"ok/{i}".encode(), b"x" * i) for i in range(5))
            )
            await ok
            assert await node.get(lease.id, b"ok/4") == b"xxxx"
            # a block id makes the node refuse the whole batch: every write in it fails
            bad = [
                batcher.put(lease.id, node, block_object_id(bytes(16), 0, 0), b"1"),
                batcher.put(lease.id, node, b"fine", b"2"),
            ]
            outcomes = await asyncio.gather(*bad, return_exceptions=True)
            assert all(isinstance(o, Exception) for o in outcomes)
        finally:
            await batcher.close()


async def test_a_lingering_batch_waits_for_company(
    net: Network, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes: list[int] = []
    real = NodeClient.put_batch

    async def counted(
        self: NodeClient, lease_id: int, items: Sequence[tuple[bytes, bytes]]
    ) -> list[StoredObject]:
        sizes.append(len(items))
        return await real(self, lease_id, items)

    acct = await net.new_account("batch-linger")
    (tmp_path / "tiny").write_bytes(b"opens the account's leases")
    async with net.client(acct) as client:
        await client.put(tmp_path / "tiny")
        await client.flush()  # the file's own writes are done
        lease = (await client.ctx.leases.mine())[0]
        _, node = await client.ctx.peers.client_for_lease(lease.id)
        monkeypatch.setattr(NodeClient, "put_batch", counted)
        batcher = Batcher(timeout=5.0)
        try:
            writes = []
            for i in range(6):  # one after another, as a put loop writes behind
                writes.append(
                    asyncio.create_task(batcher.put(lease.id, node, b"l%d" % i, b"x", linger=0.3))
                )
                await asyncio.sleep(0.01)
            await asyncio.gather(*writes)
            assert sizes == [6]
            await batcher.put(lease.id, node, b"now", b"y")  # no linger: sent at once, alone
            assert sizes == [6, 1]
        finally:
            await batcher.close()
