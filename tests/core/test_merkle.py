"""The share and lease Merkle trees: the frozen definitions, RFC 9162 proofs, the builder."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nuclux.core.merkle import (
    EMPTY_ROOT,
    LEAF_BYTES,
    MerkleBuilder,
    entry_hash,
    inclusion_proof,
    inclusion_proofs,
    leaf_count,
    leaf_hash,
    leaf_hashes,
    lease_root,
    merkle_root,
    node_hash,
    proof_length,
    root_of_bytes,
    verify_inclusion,
)
from nuclux.errors import UsageError


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_mth(entries: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.1, written from the definition."""
    n = len(entries)
    if n == 0:
        return sha(b"")
    if n == 1:
        return entries[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return sha(b"\x01" + ref_mth(entries[:k]) + ref_mth(entries[k:]))


def ref_path(m: int, entries: list[bytes]) -> list[bytes]:
    """RFC 9162 section 2.1.3.1."""
    n = len(entries)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*ref_path(m, entries[:k]), ref_mth(entries[k:])]
    return [*ref_path(m - k, entries[k:]), ref_mth(entries[:k])]


def hashes(n: int) -> list[bytes]:
    return [sha(b"\x00" + i.to_bytes(4, "big")) for i in range(n)]


# -- known answers, from the definition by hand -----------------------------------------------


def test_primitives_are_the_frozen_definitions() -> None:
    assert leaf_hash(b"a") == sha(b"\x00a")
    assert leaf_hash(b"x" * LEAF_BYTES) == sha(b"\x00" + b"x" * LEAF_BYTES)
    a, b = sha(b"A"), sha(b"B")
    assert node_hash(a, b) == sha(b"\x01" + a + b)
    assert entry_hash(a, 5) == sha(b"\x02" + a + b"\x00\x00\x00\x00\x00\x00\x00\x05")
    assert sha(b"") == EMPTY_ROOT
    assert bytes.fromhex(
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    ) == merkle_root([])


def test_tiny_trees_by_hand() -> None:
    d = [bytes([65 + i]) for i in range(5)]  # leaves "A".."E"
    lh = [sha(b"\x00" + x) for x in d]

    def n(left: bytes, right: bytes) -> bytes:
        return sha(b"\x01" + left + right)

    assert root_of_bytes(b"") == sha(b"")
    assert merkle_root(lh[:1]) == lh[0]
    assert merkle_root(lh[:2]) == n(lh[0], lh[1])
    assert merkle_root(lh[:3]) == n(n(lh[0], lh[1]), lh[2])
    assert merkle_root(lh[:5]) == n(n(n(lh[0], lh[1]), n(lh[2], lh[3])), lh[4])
    # the 3-leaf tree's paths: leaf 2 has one sibling (the pair), leaf 0 two
    assert inclusion_proof(lh[:3], 2) == (n(lh[0], lh[1]),)
    assert inclusion_proof(lh[:3], 0) == (lh[1], lh[2])
    assert inclusion_proof(lh[:5], 4) == (n(n(lh[0], lh[1]), n(lh[2], lh[3])),)


def test_golden_vector() -> None:
    """Pinned (docs/spec/shares.md section 1.5, Merkle suite 2) so the contract's tests can
    use the same numbers. The data is ``bytes(i % 251 for i in range(3 * 256 + 100))``: four
    256-byte leaves, the last short."""
    assert LEAF_BYTES == 256
    data = bytes(i % 251 for i in range(3 * 256 + 100))
    assert leaf_count(len(data)) == 4
    root = root_of_bytes(data)
    lh = [sha(b"\x00" + data[i : i + 256]) for i in range(0, len(data), 256)]
    assert root == ref_mth(lh)
    assert root.hex() == "ffef9b99bddc89a9350cd156e459def595a889a96f0c8c82dc81e9f8ad5edb01"
    assert lh[2].hex() == "2062c6c4d70b93bd1ad1455b0d0a0df08432c47a221c98ce987808c4402ac132"
    assert [p.hex() for p in inclusion_proof(lh, 2)] == [
        "71d5bbfb363db11ce4e5030d48a2195394e3fe0d53bab78681d8c0951e502a7e",
        "e07b495cd803df735e4ee6628ac7277d35af55b24499baca93af0a07ac1c2891",
    ]
    entry = "cfc62f36f633232471e9dcf996db58a6466d014a9b33d100c1c1a4e23f6ceaa6"
    assert entry_hash(root, 4).hex() == entry
    assert lease_root([(root, 4)]).hex() == entry
    small = root_of_bytes(b"nuclux")
    assert small.hex() == "3d8d857531dc9f32286aed885d69d94b4843d9ace0a6ba9199e44cef8d29247b"
    assert lease_root([(root, 4), (small, 1)]).hex() == (
        "eddb8d59740a1707c058debf8678f0e867cc697cbaac7ce6ac20b2ecc01a2944"
    )


# -- shape and proofs ------------------------------------------------------------------------


def test_every_index_and_count_up_to_70() -> None:
    all_hashes = hashes(70)
    for count in range(1, 71):
        entries = all_hashes[:count]
        root = merkle_root(entries)
        assert root == ref_mth(entries)
        for index in range(count):
            path = inclusion_proof(entries, index)
            assert list(path) == ref_path(index, entries)
            assert len(path) == proof_length(index, count)
            assert verify_inclusion(entries[index], index, count, path, root)


def test_all_paths_at_once_equal_each_path() -> None:
    all_hashes = hashes(70)
    for count in range(1, 71):
        entries = all_hashes[:count]
        assert inclusion_proofs(entries) == [inclusion_proof(entries, i) for i in range(count)]
    assert inclusion_proofs([]) == []


def test_proofs_fail_for_anything_else() -> None:
    all_hashes = hashes(40)
    other = sha(b"other")
    for count in (1, 2, 3, 7, 8, 9, 21, 40):
        entries = all_hashes[:count]
        root = merkle_root(entries)
        for index in range(count):
            leaf, path = entries[index], list(inclusion_proof(entries, index))
            assert not verify_inclusion(other, index, count, path, root)
            assert not verify_inclusion(leaf, index, count, path, other)
            assert not verify_inclusion(leaf, index, count, [*path, other], root)
            if path:
                assert not verify_inclusion(leaf, index, count, path[:-1], root)
            for j in range(len(path)):
                bad = [*path]
                bad[j] = other
                assert not verify_inclusion(leaf, index, count, bad, root)
            for wrong in range(count + 2):
                if wrong != index:
                    assert not verify_inclusion(leaf, wrong, count, path, root)
            for wrong_count in range(index + 1, count + 3):
                # a path does not bind the count by itself (index 0 of 3 and of 4 share a
                # path and root): it must come from a trusted place, hence entry_hash's
                # leaf count. A count that implies another path length always fails.
                if proof_length(index, wrong_count) != len(path):
                    assert not verify_inclusion(leaf, index, wrong_count, path, root)


def test_verify_rejects_malformed_arguments() -> None:
    h = hashes(2)
    root = merkle_root(h)
    path = inclusion_proof(h, 0)
    assert verify_inclusion(h[0], 0, 2, path, root)
    assert not verify_inclusion(h[0], -1, 2, path, root)
    assert not verify_inclusion(h[0], 2, 2, path, root)
    assert not verify_inclusion(h[0], 0, 0, [], root)
    assert not verify_inclusion(h[0][:31], 0, 2, path, root)
    assert not verify_inclusion(h[0], 0, 2, [path[0][:31]], root)
    assert not verify_inclusion(h[0], 0, 2, path, root[:31])
    assert not verify_inclusion(h[0], 0, 2, [path[0]] * 100, root)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 3000), st.data())
def test_random_members_verify(count: int, data: st.DataObject) -> None:
    entries = hashes(count)
    root = merkle_root(entries)
    index = data.draw(st.integers(0, count - 1))
    path = inclusion_proof(entries, index)
    assert verify_inclusion(entries[index], index, count, path, root)
    if count <= 300:
        assert root == ref_mth(entries)
        assert list(path) == ref_path(index, entries)


def test_block_roots_are_interior_nodes() -> None:
    """Runs of 2**h leaves (the last may be shorter): the MTH over the runs' roots is the MTH
    over the leaves, which the share layout relies on."""
    all_hashes = hashes(100)
    for h in range(5):
        run = 1 << h
        for count in range(1, 100):
            entries = all_hashes[:count]
            runs = [merkle_root(entries[i : i + run]) for i in range(0, count, run)]
            assert merkle_root(runs) == merkle_root(entries)


# -- bytes and the streaming builder ---------------------------------------------------------


@pytest.mark.parametrize(
    "size", [0, 1, LEAF_BYTES - 1, LEAF_BYTES, LEAF_BYTES + 1, 5 * LEAF_BYTES, 9 * LEAF_BYTES - 3]
)
def test_leaves_split_at_leaf_bytes(size: int) -> None:
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    expected = [sha(b"\x00" + data[i : i + LEAF_BYTES]) for i in range(0, size, LEAF_BYTES)]
    assert leaf_hashes(data) == expected
    assert leaf_count(size) == len(expected)
    assert root_of_bytes(data) == ref_mth(expected)
    builder = MerkleBuilder()
    builder.update(data)
    assert builder.leaf_count == len(expected)
    assert builder.root() == ref_mth(expected)


@settings(max_examples=80, deadline=None)
@given(
    st.integers(0, 70 * LEAF_BYTES),
    st.lists(st.integers(0, 9 * LEAF_BYTES), max_size=30),
)
def test_builder_equals_one_shot_for_any_chunking(size: int, cuts: list[int]) -> None:
    data = bytes((i * 7 + 3) % 256 for i in range(size))
    builder = MerkleBuilder()
    pos = 0
    for c in cuts:
        builder.update(memoryview(data)[pos : pos + c])
        pos = min(size, pos + c)
    builder.update(data[pos:])
    assert builder.size == size
    assert builder.leaf_count == leaf_count(size)
    root = builder.root()
    assert root == root_of_bytes(data)
    assert builder.root() == root
    with pytest.raises(UsageError):
        builder.update(b"x")


def test_builder_byte_by_byte() -> None:
    data = bytes(range(256)) * 13
    builder = MerkleBuilder()
    for i in range(len(data)):
        builder.update(data[i : i + 1])
    assert builder.root() == root_of_bytes(data)


# -- lease trees and bounds ------------------------------------------------------------------


def test_lease_root_binds_roots_counts_and_order() -> None:
    a, b = sha(b"a"), sha(b"b")
    root = lease_root([(a, 3), (b, 4)])
    assert root == sha(b"\x01" + entry_hash(a, 3) + entry_hash(b, 4))
    assert root != lease_root([(b, 4), (a, 3)])
    assert root != lease_root([(a, 3), (b, 5)])
    assert lease_root([]) == EMPTY_ROOT


def test_bad_arguments_are_usage_errors() -> None:
    with pytest.raises(UsageError):
        leaf_hash(b"")
    with pytest.raises(UsageError):
        leaf_hash(b"x" * (LEAF_BYTES + 1))
    with pytest.raises(UsageError):
        node_hash(b"x", sha(b""))
    with pytest.raises(UsageError):
        entry_hash(b"x", 1)
    with pytest.raises(UsageError):
        entry_hash(sha(b""), -1)
    with pytest.raises(UsageError):
        merkle_root([b"short"])
    with pytest.raises(UsageError):
        inclusion_proof(hashes(3), 3)
    with pytest.raises(UsageError):
        proof_length(0, 0)
    with pytest.raises(UsageError):
        leaf_count(-1)


def test_the_count_comes_from_a_trusted_place() -> None:
    """RFC 9162 paths do not bind the tree size: entry 0's path in a tree of 3 also checks
    against a tree of 4 with the same root. Verifiers take ``count`` from the signed lease
    entry (``entry_hash`` binds it), never from the prover."""
    entries = hashes(3)
    path = inclusion_proof(entries, 0)
    root = merkle_root(entries)
    assert verify_inclusion(entries[0], 0, 3, path, root)
    assert verify_inclusion(entries[0], 0, 4, path, root)
    assert entry_hash(root, 3) != entry_hash(root, 4)
