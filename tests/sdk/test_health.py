"""``ls`` with health checks on many files: each lease's end read once for the listing, each
manifest asked of the leases the index names (every lease only when none of those has it),
and a name pattern choosing which files."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from nuclux.chain.ledger import Ledger
from nuclux.core.reference import manifest_object_id
from nuclux.net.client import NodeClient
from tests.sdk.network import Network


async def test_ls_check_reads_each_lease_once_and_asks_the_index_locators(
    net: Network, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    acct = await net.new_account("ls-many")
    refs = []
    async with net.client(acct) as client:
        for i in range(12):
            path = tmp_path / f"f{i}"
            path.write_bytes(os.urandom(3000 if i % 3 else 200_000))  # packed and coded files
            refs.append(await client.put(path))
    manifest_gets: Counter[bytes] = Counter()
    lease_reads: Counter[int] = Counter()
    real_get, real_lease = NodeClient.get, Ledger.lease

    async def get(self: NodeClient, lease_id: int, object_id: bytes, **kw: Any) -> bytes:
        if object_id.endswith(b"/m"):
            manifest_gets[object_id] += 1
        return await real_get(self, lease_id, object_id, **kw)

    async def lease(self: Ledger, lease_id: int) -> Any:
        lease_reads[lease_id] += 1
        return await real_lease(self, lease_id)

    monkeypatch.setattr(NodeClient, "get", get)
    monkeypatch.setattr(Ledger, "lease", lease)
    async with net.client(acct) as client:
        index = await client.ctx.index.current()
        locators = {e.file_id: len(e.locators) for e in index.entries}
        leases = len(await client.ctx.leases.mine())
        lease_reads.clear()  # the index's read above met every lease already
        listed = await client.ls(check=True)
        reads, gets = dict(lease_reads), dict(manifest_gets)
        some = await client.ls(check=True, match="f1*")  # a shell pattern on stored names
        assert sorted(e.name for e in some) == ["f1", "f10", "f11"]
        assert all(e.status == "healthy" for e in some)
        assert await client.ls(match="nothing-*") == []
        # the 12 files' manifests lived on 3 of the account's leases: one of those left now
        gone = refs[1]
        entry = index.get(gone.file_id)
        assert entry is not None
        data = b""
        for lid in entry.locators:
            _, node = await client.ctx.peers.client_for_lease(lid)
            data = await real_get(node, lid, manifest_object_id(gone.file_id))
            await node.delete(lid, manifest_object_id(gone.file_id))
        elsewhere = next(x.id for x in await client.ctx.leases.mine() if x.id not in entry.locators)
        _, node = await client.ctx.peers.client_for_lease(elsewhere)
        await node.put(elsewhere, manifest_object_id(gone.file_id), data)
    assert {e.reference for e in listed} == set(refs)
    assert all(e.status == "healthy" for e in listed)
    for ref in refs:  # the index's locators, not every lease of the account
        assert gets[manifest_object_id(ref.file_id)] == locators[ref.file_id]
    assert max(locators.values()) < leases
    assert reads  # lease ends from the chain, once per lease for the whole listing
    assert max(reads.values()) == 1
    manifest_gets.clear()
    async with net.client(acct) as client:
        again = {e.reference: e for e in await client.ls(check=True)}
    assert again[gone].status == "degraded"  # found on a lease the index does not name
    assert again[gone].healthy == 1
    assert manifest_gets[manifest_object_id(gone.file_id)] == locators[gone.file_id] + leases
