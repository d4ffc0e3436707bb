"""``records_table``: a table when it fits the terminal, one block per row when it does not."""

from __future__ import annotations

import pytest

from nuclux.cli.output import LARGE_LISTING, records_table

REF = "nux:" + "a" * 65  # as long as a real reference
COLUMNS = ["reference", "name", "size", "health"]
ROWS = [(REF, "report.pdf", "1.2 MiB", "healthy (8/8, needs 4)"), (REF[:-1] + "b", "x", None, "ok")]


def _render(width: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> str:
    monkeypatch.setenv("COLUMNS", str(width))
    records_table("Files", COLUMNS, ROWS)
    return capsys.readouterr().out


def test_a_wide_terminal_gets_the_table(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _render(200, monkeypatch, capsys)
    lines = out.splitlines()
    assert lines[0].startswith("Files")
    assert any(REF in line and "report.pdf" in line and "healthy" in line for line in lines)
    assert all(len(line) <= 200 for line in lines)


def test_a_narrow_terminal_gets_one_block_per_row_with_whole_references(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _render(60, monkeypatch, capsys)
    assert out.split("\n\n") == [
        f"{REF}\n  name:   report.pdf\n  size:   1.2 MiB\n  health: healthy (8/8, needs 4)",
        f"{REF[:-1]}b\n  name:   x\n  size:   -\n  health: ok\n",
    ]


def test_the_switch_is_where_the_table_stops_fitting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # widest cells 69 + 10 + 7 + 22, plus 3 per column and the left rule
    fits = 69 + 10 + 7 + 22 + 3 * 4 + 1
    table = _render(fits, monkeypatch, capsys)
    assert "name:" not in table
    assert sum(REF in line for line in table.splitlines()) == 1  # no cell folded
    assert "name:" in _render(fits - 1, monkeypatch, capsys)


def test_wide_characters_count_as_the_terminal_shows_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # a name of 10 CJK characters takes 20 columns, as wide as the widest name above
    wide = [(REF, "文" * 10, "1.2 MiB", "healthy (8/8, needs 4)")]
    fits = 69 + 20 + 7 + 22 + 3 * 4 + 1
    monkeypatch.setenv("COLUMNS", str(fits - 1))
    records_table("Files", COLUMNS, wide)
    assert "name:" in capsys.readouterr().out  # by len() it would have seemed to fit
    monkeypatch.setenv("COLUMNS", str(fits))
    records_table("Files", COLUMNS, wide)
    assert "name:" not in capsys.readouterr().out


def test_a_large_listing_is_plain_text_in_the_same_layouts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [(f"nux:{i:065d}", f"photos/{i}.jpg", "4.0 KiB", "healthy") for i in range(600)]
    assert len(rows) > LARGE_LISTING
    monkeypatch.setenv("COLUMNS", "200")
    records_table("Files", COLUMNS, rows)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Files"
    assert lines[1].split() == COLUMNS
    assert len(lines) == 2 + len(rows)
    for line, (ref, name, size, health) in zip(lines[2:], rows, strict=True):
        assert line.split() == [ref, name, *size.split(), health]  # whole, in order
        assert line.index(name) == lines[1].index("name")  # aligned under its header
    monkeypatch.setenv("COLUMNS", "60")
    records_table("Files", COLUMNS, rows)
    blocks = capsys.readouterr().out.split("\n\n")
    assert len(blocks) == len(rows)
    assert (
        blocks[7] == f"{rows[7][0]}\n  name:   photos/7.jpg\n  size:   4.0 KiB\n  health: healthy"
    )
