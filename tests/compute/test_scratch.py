"""The scratch directory on its own: preparing and emptying it, the usage walk and output
collection, none of which follows a link."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from nuclux.node.compute import scratch

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    d = tmp_path / "host"
    d.mkdir()
    (d / "secret").write_bytes(b"s" * 1000)
    return d


def test_prepare_and_reset(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "w-1"
    scratch.prepare(root, [("a.txt", b"abc"), ("b", b"")])
    assert sorted(os.listdir(root)) == ["in", "out"]
    assert (root / "in" / "a.txt").read_bytes() == b"abc"
    assert (root / "in" / "a.txt").stat().st_mtime == 0
    # what a job may leave: files, directories, links to the host, a replaced /out
    (root / "out" / "o").write_bytes(b"1")
    os.rename(root / "out" / "o", root / "in" / "o")
    (root / "junk").mkdir()
    (root / "junk" / "deep").mkdir()
    os.symlink(outside, root / "in" / "link")
    os.rmdir(root / "out")
    os.symlink(outside, root / "out")
    scratch.prepare(root, [("c", b"3")])
    assert sorted(os.listdir(root)) == ["in", "out"]
    assert os.listdir(root / "in") == ["c"]
    assert os.listdir(root / "out") == []
    assert not (root / "out").is_symlink()
    assert (outside / "secret").read_bytes() == b"s" * 1000  # nothing outside was touched
    with pytest.raises(ValueError, match="invalid input name"):
        scratch.prepare(root, [("../x", b"")])


def test_usage_counts_without_following_links(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "w"
    scratch.prepare(root, [("a", b"x" * 100)])
    os.symlink(outside, root / "out" / "host")
    used, entries = scratch.usage(root)
    assert entries == 4  # in, out, in/a, out/host
    sizes = [os.lstat(root / p).st_size for p in ("in", "out", "in/a", "out/host")]
    assert used == sum(sizes)  # the link's own size, not the secret's
    for i in range(20):
        (root / "out" / f"f{i}").touch()
    assert scratch.usage(root, max_entries=10)[1] == 11  # stops counting past the bound


def test_collect(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "w"
    scratch.prepare(root, [])
    assert scratch.collect(root, 10, 100) == {}
    (root / "out" / "b.txt").write_bytes(b"bb")
    (root / "out" / "a.txt").write_bytes(b"a")
    assert scratch.collect(root, 10, 100) == {"a.txt": b"a", "b.txt": b"bb"}
    with pytest.raises(scratch.OutputRejected, match="output_bytes"):
        scratch.collect(root, 10, 2)
    with pytest.raises(scratch.OutputRejected, match="at most 1 outputs"):
        scratch.collect(root, 1, 100)
    target = root / "out" / "z"
    os.symlink(outside / "secret", target)
    with pytest.raises(scratch.OutputRejected, match="is a symbolic link"):
        scratch.collect(root, 10, 10_000)
    target.unlink()
    os.mkdir(target)
    with pytest.raises(scratch.OutputRejected, match="not a regular file"):
        scratch.collect(root, 10, 10_000)
    os.rmdir(target)
    os.mkfifo(target)
    with pytest.raises(scratch.OutputRejected, match="not a regular file"):
        scratch.collect(root, 10, 10_000)  # opened O_NONBLOCK: a FIFO does not hang it
    target.unlink()
    (root / "out" / ".hidden").touch()
    with pytest.raises(scratch.OutputRejected, match="output names are"):
        scratch.collect(root, 10, 100)
    scratch.remove(root)
    assert not root.exists()
    assert (outside / "secret").exists()
