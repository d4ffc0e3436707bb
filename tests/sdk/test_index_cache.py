"""A device's cache of its file index's pages: kept under their names and checked on the way
out, bounded, never a failure; a second listing on the device fetches no page."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest

from nuclux.core.file_index import FileIndex, index_key
from nuclux.core.index_entries import IndexEntry
from nuclux.core.index_tree import page_name, seal_page
from nuclux.core.types import LeaseId
from nuclux.net.client import NodeClient
from nuclux.sdk.index_cache import PageCache
from tests.sdk.network import SETTINGS, Network

OWNER = "0x" + "33" * 20
KEY = index_key(bytes(range(32)), OWNER)


def page(i: int, name_len: int = 10) -> tuple[bytes, bytes]:
    fid = hashlib.sha256(b"cache/%d" % i).digest()[:16]
    e = IndexEntry(fid, "n" * name_len, i, 1_700_000_000, 1, (LeaseId(1),))
    ref, sealed = seal_page(OWNER, (e,), key=KEY, nonce=os.urandom(12))
    return ref.name, sealed


def test_a_page_comes_back_only_intact(tmp_path: Path) -> None:
    cache = PageCache(tmp_path / "pages")
    name, data = page(1)
    assert cache.get(name) is None
    cache.put(name, data)
    assert cache.get(name) == data
    (tmp_path / "pages" / name.hex()).write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    assert cache.get(name) is None  # damaged: dropped, fetched again from the network
    assert not (tmp_path / "pages" / name.hex()).exists()
    with pytest.raises(ValueError, match="own name"):
        cache.put(page_name(b"other"), data)
    assert (cache.hits, cache.misses) == (1, 2)


def test_least_recently_used_pages_go_past_the_limit(tmp_path: Path) -> None:
    pages = [page(i, 200) for i in range(8)]
    size = len(pages[0][1])
    cache = PageCache(tmp_path, limit=5 * size)
    for i, (name, data) in enumerate(pages[:5]):
        cache.put(name, data)
        os.utime(tmp_path / name.hex(), (time.time() - 100 + i, time.time() - 100 + i))
    assert cache.get(pages[0][0]) is not None  # used just now: kept
    for name, data in pages[5:]:
        cache.put(name, data)
    held = {p.name for p in tmp_path.iterdir()}
    assert pages[0][0].hex() in held
    assert pages[1][0].hex() not in held  # the oldest went
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= 5 * size


def test_a_cache_that_cannot_be_written_is_a_miss(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"not a directory")
    cache = PageCache(blocker / "pages")
    name, data = page(2)
    cache.put(name, data)  # no error
    assert cache.get(name) is None


async def test_a_second_listing_on_the_device_fetches_no_page(
    net: Network, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    acct = await net.new_account("index-cache")
    settings = dataclasses.replace(SETTINGS, index_cache=str(tmp_path / "c"))
    (tmp_path / "first").write_bytes(b"opens the leases")
    async with net.client(acct) as writer:  # no cache: the pages reach the device by reading
        await writer.put(tmp_path / "first")
        lease = LeaseId((await writer.ctx.leases.mine())[0].id)
        for i in range(3000):
            fid = hashlib.sha256(b"cached/%d" % i).digest()[:16]
            writer.ctx.index.put(IndexEntry(fid, f"f{i}", i, 1_700_000_000, 1, (lease,)))
    page_gets: list[bytes] = []
    real = NodeClient.get

    async def get(self: NodeClient, lease_id: int, object_id: bytes, **kw: Any) -> bytes:
        if object_id.startswith(b"i/p/"):
            page_gets.append(object_id)
        return await real(self, lease_id, object_id, **kw)

    monkeypatch.setattr(NodeClient, "get", get)
    seen: list[FileIndex] = []
    fetched: list[int] = []
    for _ in range(2):
        async with net.client(acct, settings) as device:
            seen.append(await device.ctx.index.current())
        fetched.append(len(page_gets))
        page_gets.clear()
    assert fetched[0] >= 4  # the first listing fetched every page, the second none
    assert fetched[1] == 0
    assert seen[0] == seen[1]
    assert len(seen[1].entries) == 3001
