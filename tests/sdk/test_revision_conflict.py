"""The SDK's revision book reports a provider that signed two revisions with one number.

A real node (TLS on loopback, its shard store, the embedded chain with StorageSettlement)
co-signs revision 1 for the consumer's book. The provider then rewrites that revision in its
own database (another used-bytes figure, signed again with its operator key) and restarts. The
book's next change is refused (the node computes other used bytes); the book reads the node's
latest revision, finds it is a different revision 1 under the provider's signature, and puts
both on chain: a fault on the lease. It refuses to build on a revision it never signed.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest_asyncio
from aiohttp import web

from nuclux.chain import ChainConnection
from nuclux.chain.revision import Revision
from nuclux.core.auth import ReplayGuard, RequestVerifier
from nuclux.core.merkle import leaf_count, root_of_bytes
from nuclux.core.reference import block_object_id
from nuclux.core.types import ONE_NUX, ResourceClass
from nuclux.core.units import GIB
from nuclux.net.client import NodeClient
from nuclux.net.tls import NodeIdentity, server_ssl_context
from nuclux.node.follower import ChainView
from nuclux.node.revisions import RevisionSigner
from nuclux.node.server import NodeService
from nuclux.node.store import ShardStore
from nuclux.sdk.revisions import RevisionBook
from tests.chain.storage_kit import STORAGE_PARAMS
from tests.chain.world import PRICES, World, build_world

B = 4096
FA, FB = bytes(range(16)), bytes(range(16, 32))


@pytest_asyncio.fixture
async def world() -> AsyncIterator[World]:
    conn = await ChainConnection.open("embedded")
    try:
        yield await build_world(conn, default_modules=True, params=STORAGE_PARAMS)
    finally:
        await conn.close()


@asynccontextmanager
async def serving(
    w: World, root: Path, identity: NodeIdentity, key: bytes
) -> AsyncIterator[NodeClient]:
    """Provider 0's node on loopback over the store in ``root``; yields a client of it
    holding ``key``."""
    view = ChainView(w.deployer)
    await view.catch_up()
    store = await ShardStore.open(root, 8 * GIB, grace_seconds=60)
    service = NodeService(
        owner=w.providers[0].address,
        operator=w.operators[0].address,
        fingerprint=identity.fingerprint,
        chain_id=w.conn.chain_id,
        store=store,
        view=view,
        verifier=RequestVerifier(identity.fingerprint, ReplayGuard(120)),
        max_object_bytes=64 << 20,
        revision_signer=RevisionSigner.for_ledger(w.operators[0]),
    )
    runner = service.runner()
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl_context(identity))
    await site.start()
    url = f"https://127.0.0.1:{runner.addresses[0][1]}"
    try:
        async with NodeClient(url, identity.fingerprint, key) as client:
            yield client
    finally:
        await runner.cleanup()
        await store.close()
        view.close()


async def put_share(c: NodeClient, lease: int, fid: bytes, data: bytes) -> tuple[bytes, int, int]:
    for j in range(0, len(data), B):
        await c.put(lease, block_object_id(fid, 0, j // B), data[j : j + B])
    return root_of_bytes(data), leaf_count(len(data)), len(data)


def rewrite_revision_1(w: World, db: Path, lease: int) -> Revision:
    """The provider rewrites its revision 1 (one more used byte) and signs it again."""
    with sqlite3.connect(db) as con:
        used, count, root = con.execute(
            "SELECT used_bytes, share_count, root FROM revisions WHERE lease_id = ?", (lease,)
        ).fetchone()
        forged = Revision(lease, 1, used + 1, count, bytes(root))
        con.execute(
            "UPDATE revisions SET used_bytes = ?, provider_sig = ? WHERE lease_id = ?",
            (forged.used_bytes, w.operators[0].sign_revision(forged), lease),
        )
        con.execute("UPDATE revision_shares SET size = size + 1 WHERE lease_id = ?", (lease,))
    con.close()
    return forged


async def test_the_book_reports_a_provider_that_rewrote_a_revision(
    world: World, tmp_path: Path
) -> None:
    w = world
    c, x = w.consumers[0], w.outsider
    lease = await c.open_lease(
        w.providers[0].address, ResourceClass.STORAGE, 1, 10, PRICES[0], ONE_NUX
    )
    await w.operators[0].accept(lease)
    identity = NodeIdentity.generate(w.providers[0].address)
    key = bytes(c.account.key)
    book = RevisionBook(c)
    async with serving(w, tmp_path / "store", identity, key) as client:
        a = await put_share(client, lease, FA, os.urandom(B + 100))
        done = await book.commit(client, lease, add=[(FA, 0, a)])
    assert (done.revision, done.error) == (1, None)
    assert (await x.lease(lease)).faults == 0

    forged = rewrite_revision_1(w, tmp_path / "store" / "index.sqlite3", lease)
    async with serving(w, tmp_path / "store", identity, key) as client:
        b = await put_share(client, lease, FB, os.urandom(B))
        done = await book.commit(client, lease, add=[(FB, 0, b)])
        latest = await client.latest_revision(lease)
    assert latest is not None
    assert (latest.revision, latest.used_bytes) == (1, forged.used_bytes)
    # the book would not build on a revision it never signed: the change stays pending
    assert done.revision is None
    assert done.error is not None
    assert "not one this account signed" in done.error
    # and the provider's two signatures over revision 1 are on chain as a fault
    assert await x.conflict_reported(lease, 1)
    assert (await x.lease(lease)).faults == 1
    (event,) = [e for e in await x.storage_events(lease_id=lease) if e.name == "ConflictReported"]
    assert (event.args["revision"], event.args["by"]) == (1, c.address)
