"""StorageSettings: the block size of a new file shrinks with the code's width so an upload's
memory does not grow with n; bad values are refused."""

from __future__ import annotations

import pytest

from nuclux.errors import UsageError
from nuclux.sdk.settings import MIB, SEGMENT_BLOCKS_BUDGET, StorageSettings

WIDTHS = [(3, 2 * MIB), (8, 2 * MIB), (9, MIB), (16, MIB), (32, MIB // 2), (64, MIB // 4)]


@pytest.mark.parametrize(("n", "block"), WIDTHS)
def test_block_bytes_for_the_code_width(n: int, block: int) -> None:
    got = StorageSettings().block_bytes_for(n)
    assert got == block
    assert n * got <= SEGMENT_BLOCKS_BUDGET


def test_small_blocks_are_kept_and_never_below_1_kib() -> None:
    assert StorageSettings(block_bytes=16 << 10).block_bytes_for(64) == 16 << 10
    assert StorageSettings(block_bytes=4096).block_bytes_for(1 << 20) == 1024


@pytest.mark.parametrize("bad", [0, 1000, 3 * MIB])
def test_block_bytes_must_be_a_power_of_two(bad: int) -> None:
    with pytest.raises(UsageError, match="power of two"):
        StorageSettings(block_bytes=bad)
