from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nuclux.core.units import GIB, format_size, gib_floor, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("50GiB", 50 * GIB),
        ("1TiB", 1 << 40),
        ("512MB", 512 * 10**6),
        ("4096", 4096),
        ("1.5 GiB", 3 * GIB // 2),
        ("2kb", 2000),
        ("0", 0),
    ],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "GiB", "-1GiB", "5 parsecs", "1e9", "12 GiB extra"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


@pytest.mark.parametrize(("text", "secs"), [("90", 90), ("60s", 60), ("5m", 300), ("2h", 7200)])
def test_parse_duration(text: str, secs: int) -> None:
    assert parse_duration(text) == secs


def test_parse_duration_rejects() -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration("1.5h")


@given(st.integers(0, 1 << 50))
def test_gib_floor_and_format(size: int) -> None:
    assert gib_floor(size) * GIB <= size < (gib_floor(size) + 1) * GIB
    assert format_size(size)
