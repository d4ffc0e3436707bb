"""Garbage-collector settings for long-running Nuclux processes (the node, the CLI, benches).

CPython's cyclic collector walks every tracked container of a generation when it runs, and
the oldest generation holds everything a process built while starting: imported modules,
web3's contract classes and ABIs, the node's runtime. A node serving small objects then
spent about a third of its CPU in the collector (``perf`` of 8 nodes on loopback storing
small files: ``gc_collect_main``, ``visit_decref`` and ``visit_reachable`` together), almost
all of it re-walking objects that live as long as the process.

``freeze_startup`` moves every object alive at that moment to the permanent generation,
which the collector never walks (they are still freed normally by reference counting if they
die), and ``tune_gc`` raises the youngest generation's threshold so that short-lived
garbage of a request is usually freed by reference counting before a collection runs.
Cycles are still collected; only how often the collector runs changes.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 20_000
"""Allocations (net of deallocations) of tracked objects between young collections; the
interpreter's default is 700."""

_tuned = False


def tune_gc() -> None:
    """Raise the youngest generation's threshold (once per process; keeps the other two)."""
    global _tuned
    if _tuned:
        return
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
    _tuned = True


def freeze_startup(*, collect: bool = True) -> int:
    """Move every object alive now to the permanent generation (after one collection unless
    ``collect=False``, where start-up made little garbage and its latency counts); returns
    how many objects it holds. Call when a process has finished starting up, and again after
    a later phase that builds long-lived state (freezing is cumulative)."""
    if collect:
        gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
