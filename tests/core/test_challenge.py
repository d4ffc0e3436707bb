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
    assert proof.as_args() == (2, share[LEAF_BYTES:], list(proof.share_path), [])


def test_proofs_are_bounded() -> None:
    with pytest.raises(UsageError):
        StorageProof(0, b"x", (), ())
    with pytest.raises(UsageError):
        StorageProof(1, b"", (), ())
    with pytest.raises(UsageError):
        StorageProof(1, b"x" * (LEAF_BYTES + 1), (), ())
    with pytest.raises(UsageError):
        StorageProof(1, b"x", (b"short",), ())
