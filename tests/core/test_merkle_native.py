"""The native Merkle hasher (``nuclux._merkle``) and the Python code it stands in for agree,
byte for byte, and the Python fallback still computes the frozen trees."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nuclux.core import merkle
from nuclux.core.merkle import LEAF_BYTES, MerkleBuilder, leaf_hashes, merkle_root, root_of_bytes

native = merkle._native


def test_the_extension_is_built() -> None:
    # scripts/bootstrap builds it (and installs a compiler and OpenSSL headers if missing);
    # without it hashing holds the GIL and runs about 1.5x slower
    assert native is not None


def blob(size: int) -> bytes:
    return hashlib.shake_256(size.to_bytes(8, "big")).digest(size) if size else b""


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 40 * LEAF_BYTES + 3))
def test_native_and_python_agree(size: int) -> None:
    assert native is not None
    data = blob(size)
    py = merkle._py_leaf_hashes(data)
    assert native.leaf_hashes(data, LEAF_BYTES) == b"".join(py)
    assert native.root_of_bytes(memoryview(data), LEAF_BYTES) == merkle._py_root(py)
    if py:
        assert native.root_of_hashes(b"".join(py)) == merkle._py_root(py)


@pytest.mark.parametrize("leaf", [1, 31, 256, 4096])
def test_native_takes_any_leaf_size(leaf: int) -> None:
    assert native is not None
    data = blob(5 * leaf + 1)
    leaves = [data[i : i + leaf] for i in range(0, len(data), leaf)]
    hashes = [hashlib.sha256(b"\x00" + x).digest() for x in leaves]
    assert native.root_of_bytes(data, leaf) == merkle._py_root(hashes)


def test_native_refuses_bad_arguments() -> None:
    assert native is not None
    with pytest.raises(ValueError, match="leaf_bytes"):
        native.root_of_bytes(b"abc", 0)
    with pytest.raises(ValueError, match="32-byte"):
        native.root_of_hashes(b"x" * 33)
    with pytest.raises(ValueError, match="32-byte"):
        native.root_of_hashes(b"")
    with pytest.raises(TypeError):
        native.leaf_hashes("text", LEAF_BYTES)  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 20 * LEAF_BYTES), st.lists(st.integers(0, 5 * LEAF_BYTES), max_size=12))
def test_python_fallback_computes_the_same_trees(size: int, cuts: list[int]) -> None:
    data = blob(size)
    expected = (root_of_bytes(data), leaf_hashes(data))
    saved, merkle._native = merkle._native, None
    try:
        assert (root_of_bytes(data), leaf_hashes(data)) == expected
        assert merkle_root(expected[1]) == expected[0]
        builder = MerkleBuilder()
        pos = 0
        for c in cuts:
            builder.update(data[pos : pos + c])
            pos = min(size, pos + c)
        builder.update(data[pos:])
        assert builder.root() == expected[0]
    finally:
        merkle._native = saved


def test_the_sha_ni_and_openssl_paths_agree() -> None:
    """With SHA-NI the extension hashes two leaves or nodes at a time with its own SHA-256;
    ``NUCLUX_MERKLE_NO_SHANI`` makes it use OpenSSL's for everything. Both give the same
    bytes for messages of every padding case (and the Python definitions agree with both)."""
    script = (
        "import hashlib, sys\n"
        "from nuclux import _merkle\n"
        "out = []\n"
        "for n in (0, 1, 54, 55, 56, 63, 64, 65, 127, 128, 129, 511, 512, 513, 4097):\n"
        "    d = hashlib.shake_256(n.to_bytes(4, 'big')).digest(n) if n else b''\n"
        "    for leaf in (1, 31, 32, 54, 55, 56, 63, 64, 65, 256, 1024):\n"
        "        out.append(_merkle.leaf_hashes(d, leaf).hex())\n"
        "        out.append(_merkle.root_of_bytes(d, leaf).hex())\n"
        "sys.stdout.write(hashlib.sha256(' '.join(out).encode()).hexdigest())\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUCLUX_MERKLE_NO_SHANI"}
    runs = [
        subprocess.run(
            [sys.executable, "-c", script], env=e, capture_output=True, text=True, check=True
        ).stdout
        for e in (env, {**env, "NUCLUX_MERKLE_NO_SHANI": "1"})
    ]
    assert len(runs[0]) == 64
    assert runs[0] == runs[1]
