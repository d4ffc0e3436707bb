"""Share grouping and well-formedness, lease roots, and revision request parsing (pure)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nuclux.core.merkle import (
    LEAF_BYTES,
    entry_hash,
    inclusion_proof,
    leaf_count,
    leaf_hashes,
    merkle_root,
    root_of_bytes,
    verify_inclusion,
)
from nuclux.errors import UsageError
from nuclux.node.shares import (
    MAX_REVISION_SHARES,
    BlockRow,
    MalformedShare,
    ShareEntry,
    lease_root,
    parse_revision_request,
    summarise_share,
)

FID = bytes(range(16))


def rows_of(data: bytes, block_bytes: int) -> list[BlockRow]:
    blocks = [data[i : i + block_bytes] for i in range(0, len(data), block_bytes)]
    return [BlockRow(j, len(b), root_of_bytes(b)) for j, b in enumerate(blocks)]


@settings(max_examples=40, deadline=None)
@given(
    block_kib=st.sampled_from([1, 2, 4, 8]),
    blocks=st.integers(1, 9),
    last=st.integers(1, 8192),
    order=st.randoms(use_true_random=False),
)
def test_share_root_over_block_roots_is_the_root_over_leaves(
    block_kib: int, blocks: int, last: int, order: Any
) -> None:
    """The runs property (shares.md section 1.2): MTH(block roots) == MTH(leaves), whatever
    order the rows come in."""
    b = block_kib * 1024
    last = min(last, b)
    data = os.urandom((blocks - 1) * b + last)
    rows = rows_of(data, b)
    order.shuffle(rows)
    s = summarise_share(FID, 3, rows)
    assert s.root == root_of_bytes(data)
    assert s.leaf_count == leaf_count(len(data))
    assert (s.blocks, s.size) == (blocks, len(data))
    assert s.block_bytes == (b if blocks > 1 else max(1024, 1 << (last - 1).bit_length()))
    assert s.entry == ShareEntry(FID, 3, s.root, s.leaf_count, len(data))


def test_a_leaf_path_is_its_path_in_the_block_then_the_block_path() -> None:
    """What the prover relies on: a leaf's audit path in the share is its path inside its
    block followed by the block's path among the block roots, also for the short last block."""
    b = 4096
    data = os.urandom(5 * b + 3000)
    rows = rows_of(data, b)
    roots = [r.root for r in rows if r.root is not None]
    share_root = merkle_root(roots)
    leaves = leaf_hashes(data)
    per_block = b // LEAF_BYTES
    for leaf in range(len(leaves)):
        j, k = divmod(leaf, per_block)
        block = data[j * b : (j + 1) * b]
        path = inclusion_proof(leaf_hashes(block), k) + inclusion_proof(roots, j)
        assert path == inclusion_proof(leaves, leaf)
        assert verify_inclusion(leaves[leaf], leaf, len(leaves), path, share_root)


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([BlockRow(0, 4096, bytes(32)), BlockRow(2, 100, bytes(32))], "block 1 is missing"),
        ([BlockRow(1, 4096, bytes(32))], "block 0 is missing"),
        ([BlockRow(0, 3000, bytes(32)), BlockRow(1, 100, bytes(32))], "power of two"),
        ([BlockRow(0, 512, bytes(32)), BlockRow(1, 100, bytes(32))], "power of two"),
        ([BlockRow(0, 32 << 20, bytes(32)), BlockRow(1, 1, bytes(32))], "power of two"),
        (
            [BlockRow(0, 4096, bytes(32)), BlockRow(1, 2048, bytes(32)), BlockRow(2, 1, bytes(32))],
            "block 1 is 2048 bytes",
        ),
        ([BlockRow(0, 4096, bytes(32)), BlockRow(1, 4097, bytes(32))], "last block 1"),
        ([BlockRow(0, 4096, bytes(32)), BlockRow(1, 0, bytes(32))], "last block 1"),
        ([BlockRow(0, 0, bytes(32))], "one block is 0 bytes"),
        ([BlockRow(0, (16 << 20) + 1, bytes(32))], "one block"),
        ([BlockRow(0, 4096, bytes(32)), BlockRow(1, 10, None)], "no Merkle root"),
    ],
)
def test_malformed_shares(rows: list[BlockRow], message: str) -> None:
    with pytest.raises(MalformedShare, match=message):
        summarise_share(FID, 0, rows)


def test_no_blocks_is_not_a_share() -> None:
    with pytest.raises(UsageError):
        summarise_share(FID, 0, [])


def test_lease_root_binds_order_and_leaf_counts() -> None:
    a = ShareEntry(FID, 0, root_of_bytes(b"a" * 5000), 5, 5000)
    b = ShareEntry(FID, 1, root_of_bytes(b"nuclux"), 1, 6)
    expected = merkle_root([entry_hash(a.root, 5), entry_hash(b.root, 1)])
    assert lease_root([a, b]) == expected
    assert lease_root([b, a]) != expected
    assert lease_root([]) == merkle_root([])
    # the golden vector of shares.md section 1.5 (Merkle suite 2: 256-byte leaves)
    data = bytes(i % 251 for i in range(3 * 256 + 100))
    one = ShareEntry(FID, 0, root_of_bytes(data), 4, len(data))
    two = ShareEntry(FID, 1, root_of_bytes(b"nuclux"), 1, 6)
    assert lease_root([one, two]).hex() == (
        "eddb8d59740a1707c058debf8678f0e867cc697cbaac7ce6ac20b2ecc01a2944"
    )


def request(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "revision": 1,
        "shares": [[FID.hex(), 0], [FID.hex(), 1]],
        "remove": [[bytes(16).hex(), 2]],
        "used_bytes": 10,
        "root": "ab" * 32,
        "signature": "cd" * 65,
    }
    return body | changes


def test_parse_revision_request() -> None:
    req = parse_revision_request(request())
    assert req.shares == ((FID, 0), (FID, 1))
    assert req.remove == ((bytes(16), 2),)
    assert (req.revision, req.used_bytes, req.root, req.signature) == (
        1,
        10,
        b"\xab" * 32,
        b"\xcd" * 65,
    )
    no_remove = request()
    del no_remove["remove"]
    assert parse_revision_request(no_remove).remove == ()
    assert parse_revision_request(request(shares=[])).shares == ()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"revision": 0}, "revision"),
        ({"revision": 2**64}, "revision"),
        ({"revision": "1"}, "revision"),
        ({"revision": True}, "revision"),
        ({"used_bytes": -1}, "used_bytes"),
        ({"root": "AB" * 32}, "root"),
        ({"root": "ab" * 31}, "root"),
        ({"signature": "cd" * 64}, "signature"),
        ({"shares": [[FID.hex(), 256]]}, "shares"),
        ({"shares": [[FID.hex()[:-2], 0]]}, "shares"),
        ({"shares": [[FID.hex(), 0, 1]]}, "shares"),
        ({"shares": [[FID.hex(), 0], [FID.hex(), 0]]}, "twice"),
        ({"shares": {"a": 1}}, "shares"),
        ({"remove": [[FID.hex(), 0]]}, "both listed and removed"),
        ({"extra": 1}, "unknown fields"),
        ({"shares": [[FID.hex(), i % 256] for i in range(MAX_REVISION_SHARES + 1)]}, "at most"),
    ],
)
def test_parse_revision_request_rejects(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_revision_request(request(**changes))


def test_parse_revision_request_needs_an_object_with_shares() -> None:
    with pytest.raises(UsageError, match="JSON object"):
        parse_revision_request([1])
    body = request()
    del body["shares"]
    with pytest.raises(UsageError, match="required"):
        parse_revision_request(body)
