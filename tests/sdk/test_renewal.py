"""Renewal on the in-process network: leases ending within the window are extended (the same
lease, the incumbent provider), at price x units x epochs, soonest first within the cap;
draining and unreachable providers are left to repair; ls flags the files before and not after.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from nuclux.core.lease import Lease
from nuclux.core.reference import Reference
from nuclux.errors import ConfigError, UsageError
from nuclux.sdk import StorageClient, StorageSettings
from nuclux.sdk.renewal import RenewalReport
from nuclux.sdk.spending import SpendRecord
from tests.sdk.network import SETTINGS, Network

LENGTH = 60  # the test world's epoch length (seconds)
DAY = 86_400


def _file(tmp: Path, name: str, size: int = 300_000) -> Path:
    path = tmp / name
    path.write_bytes(os.urandom(size))
    return path


async def _leases(client: StorageClient) -> dict[int, Lease]:
    return {x.id: x for x in await client.ctx.leases.mine(refresh=True)}


def _terms(leases: dict[int, Lease]) -> dict[int, tuple[int, int, int]]:
    """What a renewal changes: (state, end epoch, escrow) of each lease."""
    return {i: (x.state, x.end_epoch, x.escrow) for i, x in leases.items()}


async def _chain_leases(net: Network, ids: list[int]) -> dict[int, Lease]:
    return {i: await net.world.deployer.lease(i) for i in ids}


async def test_a_lease_is_renewed_in_place_and_ls_stops_flagging_it(
    net: Network, tmp_path: Path
) -> None:
    acct = await net.new_account("renew-basic")
    settings = replace(
        SETTINGS, risk_days=0.04, default_days=0.05, renew_record=str(tmp_path / "spent")
    )
    async with net.client(acct, settings) as client:
        ref = await client.put(_file(tmp_path, "f"), k=1, n=2, days=0.05)
    async with net.client(acct, settings) as client:
        [entry] = await client.ls(check=True)
        assert entry.reference == ref
        assert entry.status == "healthy"
        assert not entry.at_risk
        assert entry.risk is None

    await net.conn.advance_time(1200)  # 20 of the 72 epochs: the leases end within 0.04 days
    async with net.client(acct, settings) as client:
        [entry] = await client.ls(check=True)
        assert entry.at_risk
        assert entry.risk is not None
        assert "a lease ends in 5" in entry.risk
        assert "minutes" in entry.risk
        before = await _leases(client)
        assert len(before) == 2
        balance = await net.ledger(acct).balance()
        epochs = 72  # 0.05 days of 60 s epochs

        planned = await client.renew(dry_run=True, max_spend=10**24)
        assert [r.status for r in planned.renewed] == ["planned", "planned"]
        assert planned.spent == sum(x.price * x.units * epochs for x in before.values())
        assert _terms(await _chain_leases(net, list(before))) == _terms(before)
        assert await net.ledger(acct).balance() == balance
        assert not (tmp_path / "spent").exists()

        sent = client.transactions
        report = await client.renew(max_spend=10**24)
        assert report.skipped == ()
        assert {r.lease_id for r in report.renewed} == set(before)
        after = await _chain_leases(net, list(before))
        for r in report.renewed:
            old, new = before[r.lease_id], after[r.lease_id]
            assert r.status == "renewed"
            assert r.epochs == epochs
            assert r.provider == old.provider == new.provider  # the incumbent keeps the data
            assert new.end_epoch == old.end_epoch + epochs
            assert (r.old_end, r.new_end) == (old.end_epoch * LENGTH, new.end_epoch * LENGTH)
            assert r.cost == old.price * old.units * epochs
            assert new.escrow == old.escrow + r.cost
        assert report.spent == sum(r.cost for r in report.renewed)
        assert await net.ledger(acct).balance() == balance - report.spent
        assert client.transactions == sent + 2
        assert SpendRecord(tmp_path / "spent").spent() == report.spent

        again = await client.renew(max_spend=10**24)  # nothing ends within the window now
        assert (again.renewed, again.skipped, again.spent) == ((), (), 0)
        assert client.transactions == sent + 2

        [entry] = await client.ls(check=True)
        assert not entry.at_risk
        assert entry.risk is None


async def test_the_cap_renews_the_soonest_ending_leases_first(net: Network, tmp_path: Path) -> None:
    acct = await net.new_account("renew-cap")
    base = replace(SETTINGS, renew_days=0.06, default_days=0.07)
    async with net.client(acct, base) as client:
        first = await client.put(_file(tmp_path, "a"), k=1, n=2, days=0.05)
        older = set(await _leases(client))
        await net.conn.advance_time(600)
        # reuses the two leases (their term suffices) and opens two that end sooner
        second = await client.put(_file(tmp_path, "b"), k=2, n=4, days=0.04)
        leases = await _leases(client)
    newer = set(leases) - older
    assert len(newer) == 2
    assert all(leases[i].end_epoch < leases[j].end_epoch for i in newer for j in older)
    epochs = 101  # 0.07 days
    cost = {i: x.price * x.units * epochs for i, x in leases.items()}
    assert len(set(cost.values())) == 1
    one = cost[min(older)]

    async with net.client(acct, base) as client:  # no cap anywhere: nothing is renewed
        report = await client.renew()
    assert report.renewed == ()
    assert report.allowance is None
    assert {s.lease_id for s in report.skipped} == set(leases)
    assert all("no spending cap" in s.reason and s.at_risk for s in report.skipped)
    assert _terms(await _chain_leases(net, list(leases))) == _terms(leases)

    async with net.client(acct, base) as client:
        report = await client.renew(max_spend=2 * one + one // 2)
    assert {r.lease_id for r in report.renewed} == newer
    assert report.spent == 2 * one
    assert report.allowance == 2 * one + one // 2
    assert {s.lease_id for s in report.skipped} == older
    for s in report.skipped:
        assert s.at_risk
        assert s.cost == one
        assert "more than the" in s.reason
        assert set(s.files) == {first, second}  # both files have data on the older leases
    assert set(report.files_at_risk) == {first, second}
    assert all(isinstance(f, Reference) for f in report.files_at_risk)

    # a running budget of one lease, counted in a file across clients
    record = tmp_path / "renewals.json"
    budget = replace(base, renew_budget=one, renew_record=str(record))
    async with net.client(acct, budget) as client:
        report = await client.renew()
    [renewed] = report.renewed
    assert renewed.lease_id == min(older, key=lambda i: (leases[i].end_epoch, i))
    assert (report.budget, report.budget_spent) == (one, one)
    assert SpendRecord(record).spent() == one
    async with net.client(acct, budget) as client:
        report = await client.renew(max_spend=10**24)  # the budget still binds
    assert report.renewed == ()
    assert report.allowance == 0
    [left] = report.skipped
    assert left.lease_id == max(older, key=lambda i: (leases[i].end_epoch, i))
    assert SpendRecord(record).spent() == one


async def test_draining_and_unreachable_providers_are_left_to_repair(
    net: Network, tmp_path: Path
) -> None:
    acct = await net.new_account("renew-drain")
    settings = replace(SETTINGS, renew_days=0.06, default_days=0.07)
    async with net.client(acct, settings) as client:
        await client.put(_file(tmp_path, "f"), k=1, n=3, days=0.05)
        leases = await _leases(client)
    paused, stopped, kept = sorted(leases)
    pauser = net.world.providers[net.index_of(leases[paused].provider)]
    down = net.index_of(leases[stopped].provider)
    await pauser.set_paused(True)
    await net.stop(down)
    try:
        async with net.client(acct, settings) as client:
            report = await client.renew(max_spend=10**24)
    finally:
        await net.start(down)
        await pauser.set_paused(False)
    assert [r.lease_id for r in report.renewed] == [kept]
    why = {s.lease_id: s.reason for s in report.skipped}
    assert set(why) == {paused, stopped}
    assert "paused (draining)" in why[paused]
    assert "repair moves its data" in why[paused]
    assert "unreachable" in why[stopped]
    assert "repair moves its data" in why[stopped]
    assert all(s.at_risk and len(s.files) == 1 for s in report.skipped)
    after = await _chain_leases(net, [paused, stopped])
    assert all(after[i].end_epoch == leases[i].end_epoch for i in (paused, stopped))


def test_spend_record_counts_gives_back_and_refuses_a_corrupt_file(tmp_path: Path) -> None:
    record = SpendRecord(tmp_path / "sub" / "spent.json")
    assert record.spent() == 0
    assert record.add(500, renewals=1) == 500
    assert record.add(-200, renewals=-1) == 300
    assert SpendRecord(tmp_path / "sub" / "spent.json").spent() == 300
    assert record.reserve(200, 500) is True  # exactly up to the budget
    assert record.reserve(1, 500) is False  # not a wei beyond it
    assert record.reserve(1, None) is True
    assert record.spent() == 501
    (tmp_path / "sub" / "spent.json").write_text("{not json")
    with pytest.raises(ConfigError, match="delete it to start the count again"):
        record.spent()


async def test_bad_renewal_settings_are_refused(net: Network, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="renew_record"):
        StorageSettings(renew_budget=1)
    with pytest.raises(UsageError, match="renew_days"):
        StorageSettings(renew_days=0)
    acct = await net.new_account("renew-bad")
    async with net.client(acct, replace(SETTINGS, renew_days=2.0)) as client:
        sent = client.transactions
        with pytest.raises(UsageError, match="longer than the window"):
            await client.renew(days=1.5, max_spend=10**20)
        with pytest.raises(UsageError, match="positive number of days"):
            await client.renew(days=-1, max_spend=10**20)
        with pytest.raises(UsageError, match="must not be negative"):
            await client.renew(days=3, max_spend=-1)
        report: RenewalReport = await client.renew(days=3, max_spend=10**20)  # holds no lease yet
        assert (report.renewed, report.skipped) == ((), ())
        assert client.transactions == sent


async def test_the_repair_watch_renews_first_in_each_round(net: Network, tmp_path: Path) -> None:
    acct = await net.new_account("renew-watch")
    settings = replace(
        SETTINGS,
        risk_days=0.04,
        default_days=0.05,
        renew_record=str(tmp_path / "spent"),
        renew_budget=10**24,
    )
    async with net.client(acct, settings) as client:
        await client.put(_file(tmp_path, "w"), k=1, n=2, days=0.05)
    await net.conn.advance_time(1200)  # the leases now end within the window
    reports: list[RenewalReport] = []

    async def renew() -> None:
        reports.append(await client.renew())

    async with net.client(acct, settings) as client:
        before = await _leases(client)
        rounds = await client.repair_watch(interval=0.01, rounds=1, renew=renew)
        after = await _chain_leases(net, list(before))
    assert rounds == 1
    [report] = reports
    assert len(report.renewed) == 2
    assert all(after[i].end_epoch > before[i].end_epoch for i in before)
