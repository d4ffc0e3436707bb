"""Sharing: a grant lets exactly its grantee read exactly one file until it expires."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nuclux.core.auth import b64url_decode, b64url_encode
from nuclux.core.grant import GRANT_PREFIX, MAX_GRANT_CHARS
from nuclux.errors import Forbidden, IntegrityError, UsageError
from tests.sdk.network import Network


def tamper(text: str, at: int) -> str:
    raw = bytearray(b64url_decode(text[len(GRANT_PREFIX) :], max_chars=MAX_GRANT_CHARS, what="g"))
    raw[at] ^= 0x01
    return GRANT_PREFIX + b64url_encode(bytes(raw))


def two_files(tmp: Path) -> dict[str, bytes]:
    files = {"small.txt": b"a small secret", "big.bin": os.urandom(150_000)}
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    return files


@pytest.mark.parametrize("name", ["small.txt", "big.bin"])
async def test_a_grantee_reads_and_nobody_else(net: Network, tmp_path: Path, name: str) -> None:
    owner = net.world.consumers[0].account
    grantee = await net.new_account(f"grantee-{name}")
    stranger = await net.new_account(f"stranger-{name}")
    files = two_files(tmp_path)
    async with net.client(owner) as client:
        ref = await client.put(tmp_path / name)
        other = await client.put(tmp_path / ("big.bin" if name == "small.txt" else "small.txt"))
        # the grantee has published no key yet: sharing is refused with what to do
        with pytest.raises(UsageError, match="keys publish"):
            await client.share(ref, grantee.address, days=1)
        await net.ledger(grantee).publish_key(net.keys(grantee).x25519_public)
        grant = await client.share(ref, grantee.address, days=1)
    assert grant.startswith("nuxgrant1")

    async with net.client(grantee) as reader:
        got = await reader.get(grant, tmp_path / "out")
        assert (tmp_path / "out").read_bytes() == files[name]
        assert got.reference == ref
        # the grant is for this file only: the owner's other file stays closed
        with pytest.raises(Forbidden):
            await reader.get(other, tmp_path / "nope")
        # a changed byte anywhere in the grant is refused
        for at in (30, 100, 200):
            with pytest.raises((IntegrityError, UsageError)):
                await reader.get(tamper(grant, at), tmp_path / "nope")
    async with net.client(stranger) as thief:
        with pytest.raises(Forbidden, match="ask the owner"):
            await thief.get(grant, tmp_path / "nope")
        with pytest.raises(Forbidden, match="belongs to"):
            await thief.get(ref, tmp_path / "nope")
    assert not (tmp_path / "nope").exists()


async def test_an_expired_grant_is_refused(net: Network, tmp_path: Path) -> None:
    owner = net.world.consumers[0].account
    grantee = await net.new_account("grantee-expiry")
    await net.ledger(grantee).publish_key(net.keys(grantee).x25519_public)
    (tmp_path / "f").write_bytes(b"short-lived")
    async with net.client(owner) as client:
        ref = await client.put(tmp_path / "f")
        grant = await client.share(ref, grantee.address, days=0.01)  # 864 s
    await net.conn.advance_time(900)
    async with net.client(grantee) as reader:
        with pytest.raises(Forbidden, match="expired"):
            await reader.get(grant, tmp_path / "out")
