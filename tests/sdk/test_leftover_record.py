"""The leftovers record (``nuclux.sdk.leftover_record``): merged per lease and file, kept
across processes in its file, settled without losing what was added meanwhile, and a damaged
file is an error naming it that changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from nuclux.errors import ConfigError
from nuclux.sdk.leftover_record import Leftover, LeftoverRecord

FID = b"\x01" * 16
OTHER = b"\x02" * 16


@pytest.mark.parametrize("in_file", [True, False])
def test_add_merges_per_lease_and_file(tmp_path: Path, in_file: bool) -> None:
    rec = LeftoverRecord(str(tmp_path / "left.json") if in_file else None)
    assert rec.pending() == []
    rec.add(Leftover(4, FID, (3,)))
    rec.add(Leftover(4, FID, (1,), (b"m",)))
    rec.add(Leftover(4, OTHER, objects=(b"p1", b"p2")))
    rec.add(Leftover(5, FID))  # nothing to remove: not recorded
    items = {(i.lease_id, i.file_id): i for i in rec.pending()}
    assert set(items) == {(4, FID), (4, OTHER)}
    assert items[4, FID].shares == (1, 3)
    assert items[4, FID].objects == (b"m",)
    assert items[4, FID].since > 0
    assert [i.file_id for i in rec.pending(OTHER)] == [OTHER]


def test_the_file_outlives_the_client_and_settle_keeps_later_additions(tmp_path: Path) -> None:
    path = tmp_path / "d" / "left.json"
    LeftoverRecord(str(path)).add(Leftover(4, FID, (3,), (b"m",)))
    later = LeftoverRecord(str(path))  # another process, another day
    (item,) = later.pending()
    assert (item.lease_id, item.shares, item.objects) == (4, (3,), (b"m",))
    # while a sweep works on it, a repair records one more share on the same lease
    LeftoverRecord(str(path)).add(Leftover(4, FID, (6,)))
    later.settle(item)
    (rest,) = later.pending()
    assert (rest.shares, rest.objects) == ((6,), ())
    later.settle(rest)
    assert later.pending() == []
    assert LeftoverRecord(str(path)).pending() == []


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{not json", "not a leftovers record"),
        (b'{"version": 9, "leftovers": []}', "unknown version 9"),
        (b'{"version": 1, "leftovers": [{"lease": 1}]}', "not a leftovers record"),
        (
            b'{"version": 1, "leftovers": [{"lease": 1, "file_id": "zz", "shares": [],'
            b' "objects": [], "since": 0}]}',
            "not a leftovers record",
        ),
    ],
)
def test_a_damaged_record_is_an_error_naming_it(tmp_path: Path, content: bytes, why: str) -> None:
    path = tmp_path / "left.json"
    path.write_bytes(content)
    rec = LeftoverRecord(str(path))
    with pytest.raises(ConfigError, match=why) as err:
        rec.pending()
    assert str(path) in str(err.value)
    with pytest.raises(ConfigError):
        rec.add(Leftover(4, FID, (3,)))
    assert path.read_bytes() == content  # nothing was changed
