"""Conflicting revisions on the real StorageSettlement: two revisions of one lease with the same
number and different contents, both signed by the provider, are a fault on the penalty ladder
(warnings, suspension, capped slashing to the consumer), counted once per lease and revision;
every malformed report is refused with a readable error and changes nothing."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from nuclux.chain import ChainConnection, Ledger
from nuclux.chain.revision import Revision, provider_signed_from_json, revision_to_json
from nuclux.core.lease import LeaseState
from nuclux.core.types import ONE_NUX, ResourceClass
from nuclux.errors import (
    ContractRevert,
    InvalidArgument,
    InvalidLeaseState,
    NotAuthorized,
    UsageError,
)
from tests.chain.storage_kit import STORAGE_PARAMS
from tests.chain.world import PRICES, World, build_world
from tests.cli.test_devnet_cli import Cli

STORAGE = ResourceClass.STORAGE
P = STORAGE_PARAMS


@pytest_asyncio.fixture(scope="module")
async def storage_world() -> AsyncIterator[World]:
    conn = await ChainConnection.open("embedded")
    w = await build_world(conn, default_modules=True, params=P)
    yield w
    await conn.close()


@pytest_asyncio.fixture
async def sw(storage_world: World) -> AsyncIterator[World]:
    snap = await storage_world.conn.snapshot()
    yield storage_world
    await storage_world.conn.revert(snap)


async def active(w: World, consumer: int = 0, provider: int = 0) -> int:
    lid = await w.consumers[consumer].open_lease(
        w.providers[provider].address, STORAGE, 10, 20, PRICES[STORAGE], ONE_NUX
    )
    await w.operators[provider].accept(lid)
    return lid


def pair(lid: int, number: int = 1) -> tuple[Revision, Revision]:
    """Two revisions with the same number and different roots."""
    a = Revision(lid, number, 4096, 2, bytes([number]) * 32)
    return a, dataclasses.replace(a, root=bytes([number + 100]) * 32)


async def raw_report(by: Ledger, lid: int, a: Revision, sa: bytes, b: Revision, sb: bytes) -> Any:
    """The contract call itself, past the ledger's own checks: the contract must refuse too."""
    storage = by.conn.contract("StorageSettlement", by.module_of(STORAGE))
    return await by._send(
        storage, "reportConflict", [lid, a.as_args(), sa, b.as_args(), sb], "report conflict"
    )


async def test_a_conflict_is_a_fault_counted_once(sw: World) -> None:
    w = sw
    c, p, op, x = w.consumers[0], w.providers[0], w.operators[0], w.outsider
    lid = await active(w)
    a, b = pair(lid)
    before = await x.provider(p.address)
    # owner and operator keys both speak for the provider
    report = await c.report_conflict(a, p.sign_revision(a), b, op.sign_revision(b))
    assert (report.lease_id, report.revision, report.reporter) == (lid, 1, c.address)
    assert (report.lease_failed, report.faults) == (False, 1)
    assert await x.conflict_reported(lid, 1)
    assert not await x.conflict_reported(lid, 2)
    assert (await x.lease(lid)).faults == 1
    assert (await x.provider(p.address)).faults == before.faults + 1
    events = [e for e in await x.storage_events(lease_id=lid) if e.name == "ConflictReported"]
    assert [(e.args["revision"], e.args["by"], e.args["leaseFailed"]) for e in events] == [
        (1, c.address, False)
    ]
    # the same pair, the pair swapped, or a third version of revision 1: already counted
    for first, second in ((a, b), (b, a), (a, dataclasses.replace(b, used_bytes=1))):
        with pytest.raises(InvalidLeaseState, match="ConflictAlreadyReported"):
            await x.report_conflict(
                first, op.sign_revision(first), second, op.sign_revision(second)
            )
    assert (await x.lease(lid)).faults == 1
    # a conflict on another revision number is another fault
    a2, b2 = pair(lid, 2)
    b2 = dataclasses.replace(b2, root=a2.root, share_count=3)  # the share count differs
    report = await x.report_conflict(a2, op.sign_revision(a2), b2, op.sign_revision(b2))
    assert (report.reporter, report.faults) == (x.address, 2)


async def test_malformed_reports_are_refused_and_change_nothing(sw: World) -> None:
    w = sw
    c, p, op, x = w.consumers[0], w.providers[0], w.operators[0], w.outsider
    lid = await active(w)
    other = await active(w, provider=1)
    a, b = pair(lid)
    sa, sb = op.sign_revision(a), op.sign_revision(b)

    # the ledger refuses what cannot be a conflict before sending anything ...
    with pytest.raises(UsageError, match="same number"):
        await c.report_conflict(a, sa, dataclasses.replace(b, revision=2), sb)
    with pytest.raises(UsageError, match="are the same"):
        await c.report_conflict(a, sa, a, p.sign_revision(a))
    with pytest.raises(UsageError, match="one lease"):
        await c.report_conflict(a, sa, dataclasses.replace(b, lease_id=other), sb)
    # ... and so does the contract
    b2 = dataclasses.replace(b, revision=2)
    cases: list[tuple[int, Revision, bytes, Revision, bytes, type[ContractRevert], str]] = [
        (lid, a, sa, b2, op.sign_revision(b2), InvalidArgument, "NotSameRevision"),
        (lid, a, sa, a, p.sign_revision(a), InvalidArgument, "NotConflicting"),
        # one signature is the consumer's or a stranger's, not the provider's
        (lid, a, sa, b, c.sign_revision(b), NotAuthorized, "NotOwnerOrOperator"),
        (lid, a, x.sign_revision(a), b, sb, NotAuthorized, "NotOwnerOrOperator"),
        # signed for another lease (the signature recovers to someone else)
        (other, a, sa, b, sb, NotAuthorized, "NotOwnerOrOperator"),
        # the other provider's signatures over this lease's revisions
        (lid, a, w.operators[1].sign_revision(a), b, w.operators[1].sign_revision(b),
         NotAuthorized, "NotOwnerOrOperator"),
        (lid, a, sa, b, sb[:64], NotAuthorized, "ECDSAInvalidSignatureLength"),
        (lid + 100, a, sa, b, sb, InvalidLeaseState, "UnknownLease"),
    ]  # fmt: skip
    for target, ra, ga, rb, gb, error, name in cases:
        with pytest.raises(error, match=name):
            await raw_report(x, target, ra, ga, rb, gb)
    for i in (lid, other):
        assert (await x.lease(i)).faults == 0
        assert not await x.conflict_reported(i, 1)
    assert (await x.provider(p.address)).faults == 0
    assert await x.storage_events(lease_id=lid) == []


async def test_conflicts_climb_the_ladder_and_slashing_pays_the_consumer(sw: World) -> None:
    w = sw
    p, op, x = w.providers[0], w.operators[0], w.outsider
    c0, c1 = w.consumers
    first = await active(w, consumer=0)
    second = await active(w, consumer=1)  # opened before the provider is suspended
    stake = (await x.provider(p.address)).stake
    c0_before = await x.balance(c0.address)
    for n in range(1, P.fail_threshold + 1):
        a, b = pair(first, n)
        report = await x.report_conflict(a, op.sign_revision(a), b, op.sign_revision(b))
        assert report.lease_failed is (n == P.fail_threshold)
    lease = await x.lease(first)
    assert lease.state is LeaseState.FAILED
    assert lease.paid == 0  # no epoch was confirmed for pay
    assert await x.balance(c0.address) == c0_before + ONE_NUX  # the whole escrow back
    info = await x.provider(p.address)
    assert info.faults == P.fail_threshold
    assert info.suspended_until > await w.conn.now()  # suspend_after = 3
    with pytest.raises(ContractRevert, match="ProviderNotServing"):
        await c0.open_lease(p.address, STORAGE, 1, 5, PRICES[STORAGE], ONE_NUX)
    a, b = pair(first, 9)
    with pytest.raises(InvalidLeaseState, match="BadState"):  # the lease is over
        await x.report_conflict(a, op.sign_revision(a), b, op.sign_revision(b))
    # faults 4 and 5 (on the second lease): the fifth slashes, capped, to its consumer
    c1_before = await x.balance(c1.address)
    for n in (1, 2):
        a, b = pair(second, n)
        report = await x.report_conflict(a, op.sign_revision(a), b, op.sign_revision(b))
        assert not report.lease_failed
    cut = min(stake, P.slash_cap)
    assert await x.balance(c1.address) == c1_before + cut
    assert (await x.provider(p.address)).stake == stake - cut
    assert (await x.lease(second)).state is LeaseState.ACTIVE


# ---------------------------------------------------------------------- revision documents


def test_revision_documents_round_trip_and_malformed_ones_are_refused() -> None:
    rev = Revision(7, 3, 5000, 2, bytes(range(32)))
    sig = bytes(range(65))
    doc = revision_to_json(rev, sig, consumer_sig=b"\1" * 65)
    assert provider_signed_from_json(json.loads(json.dumps(doc))) == (rev, sig)
    assert provider_signed_from_json({**doc, "root": "0x" + doc["root"]}) == (rev, sig)
    bad: list[tuple[Any, str]] = [
        ([doc], "JSON object"),
        ({k: v for k, v in doc.items() if k != "lease"}, "'lease'"),
        ({**doc, "revision": "3"}, "integer 'revision'"),
        ({**doc, "used_bytes": True}, "integer 'used_bytes'"),
        ({**doc, "root": "zz"}, "not hex"),
        ({**doc, "root": "00" * 31}, "32 bytes"),
        ({**doc, "provider_signature": "00" * 64}, "65 bytes"),
        ({**doc, "revision": 0}, "positive"),
    ]
    for value, reason in bad:
        with pytest.raises(UsageError, match=reason):
            provider_signed_from_json(value)


def test_report_conflict_command_refuses_unreadable_files(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    good = tmp_path / "good.json"
    good.write_text(json.dumps(revision_to_json(Revision(1, 1, 0, 0, bytes(32)), bytes(65))))
    garbled = tmp_path / "garbled.json"
    garbled.write_text("{not json")
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps({"lease": 1}))
    for files, reason in (
        ((tmp_path / "missing.json", good), "cannot read"),
        ((good, garbled), "is not JSON"),
        ((partial, good), "partial.json: the revision document has no integer 'revision'"),
    ):
        res = cli.run("lease", "report-conflict", *map(str, files), "--private-key-env", "K")
        assert res.exit_code == 2, res.output
        assert reason in res.output
        assert "Traceback" not in res.output
