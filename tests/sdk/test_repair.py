"""Repair: shares lost (providers stopped), corrupt, on a draining provider, or too few; a
packed file's copies; the watch loop. A repaired file is read back only through the shares
the repair made, references and grants made before it still work, and a repair with nothing
to do, or that cannot be done, changes nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from nuclux.core.lease import LeaseState
from nuclux.core.reference import Reference
from nuclux.errors import IntegrityError, ObjectNotFound, UsageError
from nuclux.sdk import NotEnoughProviders, StorageClient, rebuild
from nuclux.sdk.leftover_record import Leftover, LeftoverRecord
from nuclux.sdk.nodeapi import block_object_id, manifest_id
from nuclux.sdk.reading import open_file
from nuclux.sdk.repair import NotEnoughShares, Outcome, RepairReport
from tests.sdk.network import SETTINGS, Network

# providers just restarted on a loaded machine may be slow to answer the first probe; a
# stopped one refuses at once, so a longer probe timeout costs these tests nothing
BLOCKS = dataclasses.replace(SETTINGS, block_bytes=16 << 10, probe_timeout=10.0)
SIZE = 100_000  # 4 segments at k = 2: an audit samples all of them


def random_file(path: Path) -> bytes:
    data = os.urandom(SIZE)
    path.write_bytes(data)
    return data


async def _put(client: StorageClient, path: Path) -> tuple[Reference, bytes]:
    data = random_file(path)
    return await client.put(path, k=2, n=4), data


async def _shares(client: StorageClient, ref: Reference) -> list[tuple[str, int]]:
    opened = await open_file(client.ctx, ref)
    assert opened.body.layout is not None
    return [(s.provider, s.lease_id) for s in opened.body.layout.shares]


async def _nonce(net: Network, acct: LocalAccount) -> int:
    return int(await net.conn.w3.eth.get_transaction_count(acct.address))


@asynccontextmanager
async def stopped(net: Network, providers: list[str]) -> AsyncIterator[None]:
    indexes = [net.index_of(p) for p in providers]
    for i in indexes:
        await net.stop(i)
    try:
        yield
    finally:
        for i in indexes:
            await net.start(i)


async def test_lost_shares_are_rebuilt_on_new_providers(net: Network, tmp_path: Path) -> None:
    owner = await net.new_account("repair-lost")
    grantee = await net.new_account("repair-grantee")
    await net.ledger(grantee).publish_key(net.keys(grantee).x25519_public)
    async with net.client(owner, BLOCKS) as client:
        ref, data = await _put(client, tmp_path / "f")
        grant = await client.share(ref, grantee.address, days=1)
        before = await _shares(client, ref)
    providers = [p for p, _ in before]
    async with stopped(net, providers[2:]):  # n - k of them
        async with net.client(owner, BLOCKS) as client:
            report = await client.repair(ref)
            after = await _shares(client, ref)
        assert isinstance(report, RepairReport)
        assert report.version == 1
        assert report.new_version == 2
        assert {s.share for s in report.bad} == {2, 3}
        assert all("unreachable" in s.reason for s in report.bad)
        assert [m.share for m in report.moved] == [2, 3]
        assert all(m.committed for m in report.moved)
        new = {m.provider for m in report.moved}
        assert len(new) == 2
        assert not new & set(providers)
        assert after[:2] == before[:2]
        assert {p for p, _ in after[2:]} == new
        # a grant made before the repair still reads (from the leases it covers)
        async with net.client(grantee, BLOCKS) as reader:
            await reader.get(grant, tmp_path / "by-grant")
        assert (tmp_path / "by-grant").read_bytes() == data
        # now only the rebuilt shares serve: the file is readable thanks to the repair
        async with stopped(net, providers[:2]), net.client(owner, BLOCKS) as client:
            got = await client.get(ref, tmp_path / "out")
            assert got.version == 2
            assert {f.provider for f in got.unavailable} <= set(providers)
    assert (tmp_path / "out").read_bytes() == data
    async with net.client(owner, BLOCKS) as client:
        entry = await client.ctx.entry(ref)
        assert entry is not None
        assert entry.manifest_version == 2
        again = await client.repair(ref)  # the stopped providers are back: their old shares
    assert again.nothing_to_do  # are not in the manifest any more, so nothing is judged bad


async def test_a_corrupt_share_is_rebuilt_and_dropped(net: Network, tmp_path: Path) -> None:
    owner = await net.new_account("repair-corrupt")
    async with net.client(owner, BLOCKS) as client:
        ref, data = await _put(client, tmp_path / "f")
        provider, lease = (await _shares(client, ref))[1]
        rt = net.node_of(provider)
        oid = block_object_id(ref.file_id, 1, 2)
        info = await rt.store.stat(lease, oid)
        (blob,) = list(rt.cfg.store_dir.rglob(info.sha256.hex()))
        raw = bytearray(blob.read_bytes())
        raw[100] ^= 0x01
        os.chmod(blob, 0o644)
        blob.write_bytes(bytes(raw))
        report = await client.repair(ref)
        assert [s.share for s in report.bad] == [1]
        assert "corrupt" in report.bad[0].reason
        assert [m.share for m in report.moved] == [1]
        assert report.moved[0].provider != provider
        assert report.problems == ()
        got = await client.get(ref, tmp_path / "out")
    assert got.corrupt == ()
    assert (tmp_path / "out").read_bytes() == data
    with pytest.raises(ObjectNotFound):  # the old provider dropped the share's blocks
        await rt.store.stat(lease, oid)


async def test_a_draining_providers_shares_move_and_watch_rounds(
    net: Network, tmp_path: Path
) -> None:
    owner = await net.new_account("repair-drain")
    async with net.client(owner, BLOCKS) as client:
        ref, data = await _put(client, tmp_path / "f")
        provider, lease = (await _shares(client, ref))[0]
    ledger = net.world.providers[net.index_of(provider)]
    await ledger.set_paused(True)
    rounds: list[list[Outcome]] = []
    try:
        async with net.client(owner, BLOCKS) as client:
            ran = await client.repair_watch(
                interval=0, rounds=2, on_round=lambda _, out: rounds.append(out)
            )
            after = await _shares(client, ref)
            await client.get(ref, tmp_path / "out")
        rt = net.node_of(provider)
        with pytest.raises(ObjectNotFound):  # moved while its node still served it
            await rt.store.stat(lease, block_object_id(ref.file_id, 0, 0))
    finally:
        await ledger.set_paused(False)
    assert ran == 2
    (first,) = rounds[0]
    assert isinstance(first, RepairReport)
    assert [s.share for s in first.bad] == [0]
    assert "draining" in first.bad[0].reason
    assert first.new_version == 2
    assert first.problems == ()
    (second,) = rounds[1]
    assert isinstance(second, RepairReport)
    assert second.nothing_to_do
    assert after[0][0] != provider
    assert (tmp_path / "out").read_bytes() == data


async def test_nothing_to_do_changes_nothing(net: Network, tmp_path: Path) -> None:
    owner = await net.new_account("repair-noop")
    async with net.client(owner, BLOCKS) as client:
        ref, _ = await _put(client, tmp_path / "f")
    nonce = await _nonce(net, owner)
    async with net.client(owner, BLOCKS) as client:
        report = await client.repair(ref)
        (also,) = await client.repair_all()
        flushed = await client.flush()
        version = (await open_file(client.ctx, ref)).manifest.version
    assert report.nothing_to_do
    assert report.new_version is None
    assert report.moved == ()
    assert len(report.shares) == 4
    assert isinstance(also, RepairReport)
    assert also.nothing_to_do
    assert not flushed.index_written
    assert flushed.anchored is None
    assert version == 1
    assert await _nonce(net, owner) == nonce


async def test_fewer_than_k_healthy_shares_is_refused(net: Network, tmp_path: Path) -> None:
    owner = await net.new_account("repair-lost-too-many")
    async with net.client(owner, BLOCKS) as client:
        ref, data = await _put(client, tmp_path / "f")
        providers = [p for p, _ in await _shares(client, ref)]
    nonce = await _nonce(net, owner)
    async with stopped(net, providers[1:]), net.client(owner, BLOCKS) as client:
        with pytest.raises(NotEnoughShares, match=r"only 1 of its 4 shares") as err:
            await client.repair(ref)
        assert str(ref) in str(err.value)
        (failed,) = await client.repair_all()
        assert not isinstance(failed, RepairReport)
        assert failed.reference == ref
        assert "nothing was changed" in failed.error
    assert await _nonce(net, owner) == nonce
    async with net.client(owner, BLOCKS) as client:
        assert (await open_file(client.ctx, ref)).manifest.version == 1
        await client.get(ref, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data


async def test_a_packed_files_lost_copy_is_restored(net: Network, tmp_path: Path) -> None:
    owner = await net.new_account("repair-packed")
    (tmp_path / "note").write_bytes(b"a small note")
    async with net.client(owner, BLOCKS) as client:
        ref = await client.put(tmp_path / "note")
    async with net.client(owner, BLOCKS) as client:
        homes = (await open_file(client.ctx, ref)).manifest_leases
        assert len(homes) == 3
        lost = (await client.ctx.peers.lease(homes[0])).provider
    async with stopped(net, [lost]):
        async with net.client(owner, BLOCKS) as client:
            report = await client.repair(ref)
        assert report.packed
        assert [s.lease_id for s in report.bad] == [homes[0]]
        assert len(report.moved) == 1
        assert report.moved[0].provider != lost
        assert report.new_version is None
        async with net.client(owner, BLOCKS) as client:
            entry = await client.ctx.entry(ref)
            assert entry is not None
            assert homes[0] not in entry.locators
            assert len(entry.locators) == 3
            audit = await client.audit(ref)
            await client.get(ref, tmp_path / "out")
        assert audit.ok
        assert len(audit.shares) == 3
    assert (tmp_path / "out").read_bytes() == b"a small note"


async def test_a_bad_reference_is_a_usage_error(net: Network) -> None:
    async with net.client(net.world.consumers[0].account, BLOCKS) as client:
        with pytest.raises(UsageError, match="not a file reference"):
            await client.repair("hello")
        with pytest.raises(UsageError, match="checksum"):
            await client.repair("nux:" + "a" * 64)


async def test_no_spare_provider_is_refused_before_paying(net: Network, tmp_path: Path) -> None:
    owner = await net.new_account("repair-no-spares")
    random_file(tmp_path / "f")
    async with net.client(owner, BLOCKS) as client:
        ref = await client.put(tmp_path / "f", k=2, n=6)  # every provider of six holds one
        providers = [p for p, _ in await _shares(client, ref)]
    nonce = await _nonce(net, owner)
    async with stopped(net, providers[:2]), net.client(owner, BLOCKS) as client:
        with pytest.raises(NotEnoughProviders, match="nothing was paid"):
            await client.repair(ref)
        assert client.transactions == 0
    assert await _nonce(net, owner) == nonce
    async with net.client(owner, BLOCKS) as client:
        assert (await open_file(client.ctx, ref)).manifest.version == 1


async def test_too_few_spare_providers_rebuild_what_they_can(net: Network, tmp_path: Path) -> None:
    owner = await net.new_account("repair-one-spare")
    data = random_file(tmp_path / "f")
    async with net.client(owner, BLOCKS) as client:
        ref = await client.put(tmp_path / "f", k=2, n=5)  # one spare provider of six
        before = await _shares(client, ref)
    providers = [p for p, _ in before]
    spare = {cfg.owner for cfg in net.configs} - set(providers)
    async with stopped(net, providers[1:3]), net.client(owner, BLOCKS) as client:
        report = await client.repair(ref)
        after = await _shares(client, ref)
        got = await client.get(ref, tmp_path / "out")
    # two shares lost, one provider to take one: share 1 (the first lost) is rebuilt there
    assert {s.share for s in report.bad} == {1, 2}
    assert [m.share for m in report.moved] == [1]
    assert {m.provider for m in report.moved} == spare
    assert [s.share for s in report.unrepaired] == [2]
    assert any("shares [2] not rebuilt" in p for p in report.problems)
    assert report.new_version == 2
    assert got.version == 2
    assert after[1][0] in spare
    assert after[2] == before[2]  # still named: the provider may come back
    assert (tmp_path / "out").read_bytes() == data


async def test_a_share_whose_lease_ends_before_the_files_term_moves(
    net: Network, tmp_path: Path
) -> None:
    owner = await net.new_account("repair-term")
    async with net.client(owner, BLOCKS) as client:
        ref, data = await _put(client, tmp_path / "f")
        shares = await _shares(client, ref)
    ledger = net.ledger(owner)
    extended = [lid for _, lid in shares[1:]]
    for lid in extended:  # the file's term becomes longer than share 0's lease
        lease = await ledger.lease(lid)
        await ledger.extend(lid, 1440, lease.price * lease.units * 1440)
    for lid in extended:  # the providers' agents accept the extensions
        while (await ledger.lease(lid)).state is not LeaseState.ACTIVE:  # noqa: ASYNC110
            await asyncio.sleep(0.2)  # the chain signals no event here
    async with net.client(owner, BLOCKS) as client:
        report = await client.repair(ref)
        got = await client.get(ref, tmp_path / "out")
        new_lease = await ledger.lease(report.moved[0].lease_id)
        term_end = (await ledger.lease(extended[0])).end_epoch
    assert [s.share for s in report.bad] == [0]
    assert "before the file's term" in report.bad[0].reason
    assert [m.share for m in report.moved] == [0]
    assert report.moved[0].lease_id != shares[0][1]
    assert new_lease.end_epoch >= term_end - 1440 // 10  # the new lease lasts the term
    assert got.version == 2
    assert (tmp_path / "out").read_bytes() == data


async def test_a_rebuild_that_fails_leaves_nothing_behind(
    net: Network, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    owner = await net.new_account("repair-mismatch")
    async with net.client(owner, BLOCKS) as client:
        ref, _ = await _put(client, tmp_path / "f")
        providers = [p for p, _ in await _shares(client, ref)]
    # a rebuilt share that does not hash to the manifest's root (a wrong manifest)
    monkeypatch.setattr(rebuild, "share_root", lambda roots: bytes(32))
    async with stopped(net, providers[2:]), net.client(owner, BLOCKS) as client:
        with pytest.raises(IntegrityError, match="nothing was published"):
            await client.repair(ref)
        for lease in await client.ctx.leases.mine(refresh=True):
            try:
                rt = net.node_of(lease.provider)
            except KeyError:
                continue  # stopped
            for share in (2, 3):  # no rebuilt block stays on a new provider
                with pytest.raises(ObjectNotFound):
                    await rt.store.stat(lease.id, block_object_id(ref.file_id, share, 0))
        assert (await open_file(client.ctx, ref)).manifest.version == 1


async def test_a_share_found_corrupt_while_rebuilding_is_rebuilt_too(
    net: Network, tmp_path: Path
) -> None:
    owner = await net.new_account("repair-second-pass")
    settings = dataclasses.replace(BLOCKS, audit_samples=0)  # the audit reads the last segment
    async with net.client(owner, settings) as client:
        ref, data = await _put(client, tmp_path / "f")
        shares = await _shares(client, ref)
    provider, lease = shares[1]  # a data share: the rebuild reads it first
    rt = net.node_of(provider)
    for j in range(3):  # every segment but the last, which the audit checks
        info = await rt.store.stat(lease, block_object_id(ref.file_id, 1, j))
        (blob,) = list(rt.cfg.store_dir.rglob(info.sha256.hex()))
        raw = bytearray(blob.read_bytes())
        raw[7] ^= 0x80
        os.chmod(blob, 0o644)
        blob.write_bytes(bytes(raw))
    async with stopped(net, [shares[3][0]]), net.client(owner, settings) as client:
        report = await client.repair(ref)
        got = await client.get(ref, tmp_path / "out")
    assert {s.share: s.reason.split(":")[0] for s in report.bad} == {
        1: "failed while rebuilding",
        3: "unreachable",
    }
    assert sorted(m.share for m in report.moved) == [1, 3]
    assert report.new_version == 2
    assert report.problems == ()
    assert got.corrupt == ()
    assert (tmp_path / "out").read_bytes() == data


async def _held(client: StorageClient, lease_id: int, fid: bytes) -> tuple[set[int], set[bytes]]:
    """The shares of file ``fid`` lease ``lease_id``'s latest revision lists, and the ids of
    that file's objects its provider stores there."""
    _, node = await client.ctx.peers.client_for_lease(lease_id)
    latest = await node.latest_revision(lease_id)
    shares = {i for f, i in (latest.shares if latest else ()) if f == fid}
    prefix = f"f/{fid.hex()}/".encode()
    objects = {o.object_id for o in await node.list(lease_id) if o.object_id.startswith(prefix)}
    return shares, objects


async def test_leftovers_are_removed_once_their_providers_answer(
    net: Network, tmp_path: Path
) -> None:
    owner = await net.new_account("repair-leftovers")
    record = tmp_path / "leftovers.json"
    settings = dataclasses.replace(BLOCKS, leftovers_record=str(record))
    async with net.client(owner, settings) as client:
        ref, data = await _put(client, tmp_path / "f")
        gone = await client.put(tmp_path / "f", k=2, n=6)  # removed while a provider is down
        before = await _shares(client, ref)
        gone_shares = await _shares(client, gone)
    fid = ref.file_id
    victim, victim_lease = before[3]
    async with stopped(net, [victim]), net.client(owner, settings) as client:
        report = await client.repair(ref)
        assert [m.share for m in report.moved] == [3]
        down = [(i, lid) for i, (p, lid) in enumerate(gone_shares) if p == victim]
        removed = await client.rm(gone)
        assert removed.problems  # the stopped provider could not be told
    pending = LeftoverRecord(str(record)).pending()
    assert {(i.lease_id, i.file_id) for i in pending} >= {(victim_lease, fid)}
    async with net.client(owner, settings) as client:
        # the provider is back, still holding the moved share and the removed file's data
        assert 3 in (await _held(client, victim_lease, fid))[0]
        for i, lid in down:
            assert i in (await _held(client, lid, gone.file_id))[0]
        outcomes = await client.repair_all()
        (mine,) = [o for o in outcomes if isinstance(o, RepairReport) and o.reference == ref]
        assert mine.swept == 1
        assert mine.nothing_to_do
        assert (await _held(client, victim_lease, fid))[0] == set()
        for _, lid in down:
            assert await _held(client, lid, gone.file_id) == (set(), set())
        got = await client.get(ref, tmp_path / "out")
    assert got.version == 2
    assert (tmp_path / "out").read_bytes() == data
    assert LeftoverRecord(str(record)).pending() == []


async def test_a_sweep_keeps_what_the_newest_manifest_uses(net: Network, tmp_path: Path) -> None:
    owner = await net.new_account("repair-leftover-in-use")
    record = tmp_path / "leftovers.json"
    settings = dataclasses.replace(BLOCKS, leftovers_record=str(record))
    async with net.client(owner, settings) as client:
        ref, data = await _put(client, tmp_path / "f")
        (_, lease0), *_ = await _shares(client, ref)
        # as if an older repair had moved share 0 off this lease and a later one back
        client.ctx.leftovers.add(Leftover(lease0, ref.file_id, (0,), (manifest_id(ref.file_id),)))
        report = await client.repair(ref)
        assert report.swept == 0
        assert report.nothing_to_do
        assert (await _held(client, lease0, ref.file_id))[0] == {0}
        assert manifest_id(ref.file_id) in (await _held(client, lease0, ref.file_id))[1]
        await client.get(ref, tmp_path / "out")
    assert LeftoverRecord(str(record)).pending() == []
    assert (tmp_path / "out").read_bytes() == data
