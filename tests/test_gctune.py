"""The collector settings long-running processes apply (nuclux/gctune.py)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from nuclux import gctune


@pytest.fixture
def restore_gc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    threshold = gc.get_threshold()
    monkeypatch.setattr(gctune, "_tuned", False)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)
        gc.unfreeze()


@pytest.mark.usefixtures("restore_gc")
def test_tune_gc_raises_only_the_young_threshold() -> None:
    gc.set_threshold(700, 11, 12)
    gctune.tune_gc()
    assert gc.get_threshold() == (gctune.YOUNG_THRESHOLD, 11, 12)
    gc.set_threshold(700, 11, 12)
    gctune.tune_gc()  # once per process: a second call changes nothing
    assert gc.get_threshold() == (700, 11, 12)


@pytest.mark.usefixtures("restore_gc")
def test_freeze_startup_moves_live_objects_out_of_the_collectors_reach() -> None:
    gc.unfreeze()
    survivor = [object() for _ in range(10)]  # a tracked container alive at start-up
    frozen = gctune.freeze_startup()
    assert frozen == gc.get_freeze_count() > len(survivor)
    assert not any(obj is survivor for obj in gc.get_objects())  # not in any generation
    cycle: list[object] = []
    cycle.append(cycle)  # garbage made after the freeze is still collected
    del cycle
    assert gc.collect() >= 1
    assert gctune.freeze_startup(collect=False) >= frozen  # cumulative
