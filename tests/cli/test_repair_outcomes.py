"""How ``nuclux repair`` reports a file repaired in full, in part, or not at all: the line, the
JSON and the exit (``nuclux.cli.repair_cmd``; no network: the outcomes are built here)."""

from __future__ import annotations

import dataclasses

import pytest

from nuclux.cli.repair_cmd import _failed, outcome_json, outcome_line, print_warnings
from nuclux.core.reference import Reference
from nuclux.core.types import Address
from nuclux.sdk.repair import RepairFailure, RepairReport
from nuclux.sdk.repair_check import ShareCheck
from nuclux.sdk.repair_common import MovedShare

REF = Reference(Address("0x" + "11" * 20), b"\x22" * 16)
OTHER = Reference(Address("0x" + "33" * 20), b"\x44" * 16)


def _report(moved: tuple[int, ...], problems: tuple[str, ...] = ()) -> RepairReport:
    shares = (
        ShareCheck(0, "0xA", 1),
        ShareCheck(1, "0xB", 2, ("unreachable: refused",), reachable=False),
        ShareCheck(2, "0xC", 3, ("unreachable: refused",), reachable=False),
    )
    return RepairReport(
        REF,
        False,
        1,
        2,
        shares,
        tuple(MovedShare(i, "0xB", 2, "0xD", 9, True) for i in moved),
        problems,
    )


def test_a_full_repair_is_ok() -> None:
    report = _report((1, 2))
    assert report.unrepaired == ()
    assert outcome_json(report)["ok"] is True
    assert outcome_json(report)["unrepaired"] == []
    assert _failed([report]) is None


def test_a_partial_repair_names_the_shares_left_and_fails() -> None:
    report = _report((1,), ("shares [2] not rebuilt: no other provider can take them now",))
    assert [s.share for s in report.unrepaired] == [2]
    out = outcome_json(report)
    assert out["ok"] is False
    assert out["unrepaired"] == [2]
    assert [m["share"] for m in out["moved"]] == [1]
    assert "left behind: shares [2] not rebuilt" in outcome_line(report)
    err = _failed([report])
    assert err is not None
    assert err.exit_code == 1
    assert "1 bad share of" in str(err)
    assert "(2)" in str(err)


def test_a_round_over_many_files_counts_partial_and_failed_files() -> None:
    partial = _report((1,))
    failed = RepairFailure(OTHER, "only 1 of its 3 shares are healthy")
    err = _failed([_report((1, 2)), partial, failed])
    assert err is not None
    assert "1 of 3 files could not be repaired and 1 only in part" in str(err)
    assert str(OTHER) in str(err)
    assert str(REF) in str(err)


def test_leftovers_removed_first_are_counted() -> None:
    report = dataclasses.replace(_report(()), shares=(ShareCheck(0, "0xA", 1),), swept=1)
    assert report.nothing_to_do
    assert outcome_line(report).endswith(
        "(1/1 shares healthy); removed 1 leftover of earlier repairs"
    )
    assert outcome_json(report)["leftovers_removed"] == 1
    assert _failed([report]) is None


def test_a_watch_round_prints_its_warnings_once(capsys: pytest.CaptureFixture[str]) -> None:
    warnings = ["lease 4 still holds data of a removed share: refused", "anchor delayed"]
    print_warnings(warnings)
    err = capsys.readouterr().err
    assert err.splitlines() == [
        "warning: lease 4 still holds data of a removed share: refused",
        "warning: anchor delayed",
    ]
    assert warnings == []  # the client's list: the next round starts empty
    print_warnings(warnings)
    assert capsys.readouterr().err == ""
