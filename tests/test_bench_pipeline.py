"""The upload-pipeline ceiling of bench.storage: it moves a file, checks every block's root,
and leaves nothing behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from bench import _pipeline as pipeline


def children() -> set[int]:
    """This process's live child processes (from /proc)."""
    out: set[int] = set()
    for task in Path(f"/proc/{os.getpid()}/task").iterdir():
        out.update(int(pid) for pid in (task / "children").read_text().split())
    return out


def test_the_pipeline_moves_a_file_and_stops_its_receivers(tmp_path: Path) -> None:
    path = tmp_path / "f.bin"
    size = 9 * pipeline.MiB + 123  # three segments, the last one short
    path.write_bytes(os.urandom(size))
    before = children()
    fig = pipeline.measure(path, size, tmp_path)
    assert fig.mbps > 0
    assert fig.client_cpu_ms_per_mib > 0
    assert fig.receivers_cpu_ms_per_mib > 0
    assert children() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_a_receiver_that_stores_another_root_stops_the_pipeline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(3 * pipeline.MiB))
    monkeypatch.setattr(pipeline, "root_of_bytes", lambda data: b"\x00" * 32)
    with pytest.raises(RuntimeError, match="another root"):
        pipeline.measure(path, 3 * pipeline.MiB, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]
