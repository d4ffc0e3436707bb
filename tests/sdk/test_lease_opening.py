"""New storage leases for a file are opened together: one escrow approval for the batch, the
opens sent at once, and no allowance left standing once they are all open."""

from __future__ import annotations

import os
from pathlib import Path

from tests.sdk.network import Network


async def test_a_files_new_leases_share_one_approval(net: Network, tmp_path: Path) -> None:
    owner = await net.new_account("opening")
    ledger = net.ledger(owner)
    manager = net.world.deployment.address("LeaseManager")
    start = await net.conn.block_number()
    src = tmp_path / "in.bin"
    data = os.urandom(40_000)
    src.write_bytes(data)
    async with net.client(owner) as client:
        ref = await client.put(src, k=2, n=4)
        got = await client.get(ref, tmp_path / "out.bin")
    assert got.path.read_bytes() == data
    me = owner.address.lower()
    mine = [x for x in await ledger.leases_of(owner.address) if x.consumer.lower() == me]
    assert len(mine) == 4  # a new account: every share on a lease opened for it
    approvals = await ledger.coin.events.Approval().get_logs(
        from_block=start + 1, argument_filters={"owner": owner.address}
    )
    assert [a["args"]["spender"] for a in approvals] == [manager]  # one, for all four
    assert approvals[0]["args"]["value"] == sum(x.escrow for x in mine)
    assert await ledger._call(ledger.coin, "allowance", owner.address, manager) == 0
