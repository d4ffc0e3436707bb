"""Time-stamps: one anchor transaction per flush commits every manifest written; a file is
verified against its reference, its manifest's inclusion path and the anchoring block."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nuclux.errors import IntegrityError, ObjectNotFound
from tests.sdk.network import Network


async def test_a_batch_is_anchored_once_and_files_verify(net: Network, tmp_path: Path) -> None:
    acct = await net.new_account("timestamps")
    small, big = tmp_path / "small.txt", tmp_path / "big.bin"
    small.write_bytes(b"dated")
    big.write_bytes(os.urandom(70_000))
    async with net.client(acct) as client:
        await client.put(big)  # opens the leases first (one per provider)
    nonce = await net.conn.w3.eth.get_transaction_count(acct.address)
    async with net.client(acct) as client:
        refs = [await client.put(small), await client.put(big)]
        with pytest.raises(ObjectNotFound, match="no time-stamp yet"):
            await client.verify_timestamp(big, refs[1])
        result = await client.flush()
        assert result.anchored is not None
        assert result.anchored.count == 2
        assert client.warnings == []
    assert await net.conn.w3.eth.get_transaction_count(acct.address) == nonce + 1
    now = await net.conn.now()
    async with net.client(acct) as client:
        for path, ref in zip((small, big), refs, strict=True):
            ts = await client.verify_timestamp(path, ref)
            assert ts.reference == ref
            assert ts.version == 1
            assert ts.root == result.anchored.root
            assert ts.time <= now
        # another file, or the same file changed, is not what the reference names
        with pytest.raises(IntegrityError, match="not the file"):
            await client.verify_timestamp(small, refs[1])
        changed = bytearray(big.read_bytes())
        changed[12_345] ^= 1
        (tmp_path / "changed").write_bytes(bytes(changed))
        with pytest.raises(IntegrityError, match="not the file"):
            await client.verify_timestamp(tmp_path / "changed", refs[1])
