"""nuclux.core.challenge: the sampling and challenge draws, and proofs that verify.

The draws are checked against an independent keccak (eth_utils) here; against the Solidity
contract in tests/chain/test_storage_proofs.py."""

from __future__ import annotations

import random

import pytest
from eth_utils.crypto import keccak
from hypothesis import given
from hypothesis import strategies as st

from nuclux.core.challenge import (
    CHALLENGE_TAG,
    SAMPLE_TAG,
    StorageProof,
    answer_from_shares,
    build_proof,
    challenged_leaf,
    challenged_share,
    draw,
    is_sampled,
    seed_from_block_hash,
)
from nuclux.core.merkle import (
    LEAF_BYTES,
    entry_hash,
    leaf_count,
    leaf_hash,
    leaf_hashes,
    lease_root,
    root_of_bytes,
    verify_inclusion,
)
from nuclux.errors import UsageError

seeds = st.integers(1, 2**64 - 1)
leases = st.integers(0, 2**256 - 1)


@given(seeds, leases, st.sampled_from([SAMPLE_TAG, CHALLENGE_TAG]))
def test_draw_is_keccak_of_two_words(seed: int, lease: int, tag: int) -> None:
    word = ((tag << 64) | seed).to_bytes(32, "big") + lease.to_bytes(32, "big")
    assert draw(tag, seed, lease) == int.from_bytes(keccak(word), "big")


@given(seeds, leases, st.integers(1, 2**48), st.integers(1, 2**48))
def test_challenge_indices_are_in_range_and_from_separate_halves(
    seed: int, lease: int, shares: int, leaves: int
) -> None:
    c = draw(CHALLENGE_TAG, seed, lease)
    assert challenged_share(seed, lease, shares) == (c >> 128) % shares
    assert challenged_leaf(seed, lease, leaves) == (c % 2**128) % leaves
    assert 0 <= challenged_share(seed, lease, shares) < shares
    assert 0 <= challenged_leaf(seed, lease, leaves) < leaves


def test_sampling_rate_is_one_in_n() -> None:
    rng = random.Random(5)
    for one_in in (1, 2, 8):
        trials = 4000
        hits = sum(is_sampled(rng.randrange(1, 2**64), 7, one_in) for _ in range(trials))
        assert abs(hits / trials - 1 / one_in) < 0.03
    assert is_sampled(12345, 1, 10**9, last_epoch=True)


def test_seed_from_block_hash() -> None:
    h = bytes.fromhex("0102030405060708") + bytes(range(24))
    assert seed_from_block_hash(h) == 0x0102030405060708
    assert seed_from_block_hash(bytes(32)) == 1  # a seed is never zero
    with pytest.raises(UsageError):
        seed_from_block_hash(b"short")


def test_bad_draw_arguments() -> None:
    with pytest.raises(UsageError):
        draw(SAMPLE_TAG, 0, 1)  # zero seed
    with pytest.raises(UsageError):
        draw(SAMPLE_TAG, 2**64, 1)
    with pytest.raises(UsageError):
        draw(2, 1, 1)
    with pytest.raises(UsageError):
        is_sampled(1, 1, 0)
    with pytest.raises(UsageError):
        challenged_share(1, 1, 0)
    with pytest.raises(UsageError):
        challenged_leaf(1, 1, 0)


@given(
    st.lists(st.integers(1, 5 * LEAF_BYTES), min_size=1, max_size=9),
    seeds,
    st.integers(1, 2**64),
)
def test_answers_verify_with_the_merkle_module(sizes: list[int], seed: int, lease: int) -> None:
    rng = random.Random(seed)
    shares = [rng.randbytes(n) for n in sizes]
    entries = [(root_of_bytes(s), leaf_count(len(s))) for s in shares]
    root = lease_root(entries)
    index = challenged_share(seed, lease, len(shares))
    proof = answer_from_shares(entries, index, seed, lease, shares[index])
    leaf = challenged_leaf(seed, lease, proof.leaf_count)
    assert proof.leaf_count == entries[index][1]
    assert proof.leaf == shares[index][leaf * LEAF_BYTES : (leaf + 1) * LEAF_BYTES]
    share_root = entries[index][0]
    assert verify_inclusion(
        leaf_hash(proof.leaf), leaf, proof.leaf_count, proof.share_path, share_root
    )
    entry = entry_hash(share_root, proof.leaf_count)
    assert verify_inclusion(entry, index, len(shares), proof.lease_path, root)


def test_build_proof_checks_its_inputs() -> None:
    share = b"x" * (2 * LEAF_BYTES)
    entries = [(root_of_bytes(share), 2)]
    with pytest.raises(UsageError):
        build_proof(entries, 1, 0, leaf_hashes(share), share[:LEAF_BYTES])
    with pytest.raises(UsageError):
        build_proof(entries, 0, 0, leaf_hashes(share)[:1], share[:LEAF_BYTES])
    proof = build_proof(entries, 0, 1, leaf_hashes(share), share[LEAF_BYTES:])
    assert proof.encode() == (
        (2).to_bytes(8, "big") + LEAF_BYTES.to_bytes(2, "big") + share[LEAF_BYTES:]
    ) + b"".join(proof.share_path)


def test_packed_encoding_vector() -> None:
    """The packed proof the contract reads (docs/spec/storage-proofs.md section 5): the
    golden vector of docs/spec/shares.md (four leaves, the last 100 bytes), its leaf 3 in a
    lease of two shares, share 0 challenged."""
    data = bytes(i % 251 for i in range(3 * 256 + 100))
    small = b"nuclux"
    entries = [(root_of_bytes(data), 4), (root_of_bytes(small), 1)]
    proof = build_proof(entries, 0, 3, leaf_hashes(data), data[768:])
    packed = proof.encode()
    assert packed[:10].hex() == "0000000000000004" + "0064"
    assert packed[10:110] == data[768:]
    assert packed[110:].hex() == (
        "2062c6c4d70b93bd1ad1455b0d0a0df08432c47a221c98ce987808c4402ac132"  # leaf 2's hash
        "e07b495cd803df735e4ee6628ac7277d35af55b24499baca93af0a07ac1c2891"  # node(0, 1)
        + entry_hash(entries[1][0], 1).hex()  # the other share's entry
    )
    assert len(packed) == 10 + 100 + 3 * 32
    assert StorageProof.decode(packed, 3, 0, 2) == proof


def test_packed_decoding_checks_the_shape() -> None:
    share = bytes(range(256)) * 5
    entries = [(root_of_bytes(share), 5)] * 3
    proof = build_proof(entries, 1, 2, leaf_hashes(share), share[512:768])
    packed = proof.encode()
    assert StorageProof.decode(packed, 2, 1, 3) == proof
    for bad, args in (
        (packed[:9], (2, 1, 3)),  # no header
        (packed[:-1], (2, 1, 3)),  # a byte short
        (packed + bytes(32), (2, 1, 3)),  # a hash too many
        (packed, (4, 1, 3)),  # leaf 4 has a shorter path (it is the lone last leaf)
        (packed, (5, 1, 3)),  # no leaf 5 of 5
        (packed, (2, 3, 3)),  # no share 3 of 3
    ):
        with pytest.raises(UsageError):
            StorageProof.decode(bad, *args)


def test_proofs_are_bounded() -> None:
    with pytest.raises(UsageError):
        StorageProof(0, b"x", (), ())
    with pytest.raises(UsageError):
        StorageProof(1, b"", (), ())
    with pytest.raises(UsageError):
        StorageProof(1, b"x" * (LEAF_BYTES + 1), (), ())
    with pytest.raises(UsageError):
        StorageProof(1, b"x", (b"short",), ())
