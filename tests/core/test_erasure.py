"""Reed-Solomon k-of-n and the share layout: any k shares rebuild the file, every block is
checked on its own, and the stored bytes are the ones docs/spec/shares.md defines."""

from __future__ import annotations

import functools
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nuclux.core.erasure import (
    MAX_SHARES,
    MIN_BLOCK_BYTES,
    Layout,
    block_root,
    decode_segment,
    default_layout,
    encode_segment,
    share_root,
    verify_block,
    verify_block_roots,
)
from nuclux.core.merkle import LEAF_BYTES, inclusion_proof, leaf_hashes, root_of_bytes
from nuclux.core.segment import TAG_BYTES, SegmentCipher
from nuclux.errors import IntegrityError, UsageError

KEY = bytes(range(32))
FILE_ID = b"F" * 32


# -- GF(2^8) by the book, to check the stored bytes against the spec -------------------------


def gf_mul(a: int, b: int) -> int:
    r = 0
    while b:
        if b & 1:
            r ^= a
        a <<= 1
        if a & 0x100:
            a ^= 0x11D
        b >>= 1
    return r


@functools.cache
def gf_inv(a: int) -> int:
    return next(b for b in range(1, 256) if gf_mul(a, b) == 1)


def spec_blocks(k: int, n: int, sealed: bytes) -> list[bytes]:
    size = -(-len(sealed) // k)
    data = [sealed[j * size : (j + 1) * size].ljust(size, b"\0") for j in range(k)]
    parity = []
    for i in range(k, n):
        row = [gf_inv(i ^ j) for j in range(k)]
        out = bytearray(size)
        for j in range(k):
            for t in range(size):
                out[t] ^= gf_mul(row[j], data[j][t])
        parity.append(bytes(out))
    return data + parity


@pytest.mark.parametrize(("k", "n"), [(1, 2), (2, 3), (3, 5), (4, 8), (5, 12), (10, 16)])
def test_blocks_are_the_spec_bytes(k: int, n: int) -> None:
    rng = random.Random(k * 100 + n)
    for size in (TAG_BYTES, 17, 50, 101):
        sealed = rng.randbytes(size)
        layout = Layout(k, n, MIN_BLOCK_BYTES)
        blocks = [bytes(b) for b in encode_segment(layout, sealed)]
        assert blocks == spec_blocks(k, n, sealed)


def test_golden_vector() -> None:
    """Pinned in docs/spec/shares.md: RS(2,4) of the sealed bytes 00..13."""
    blocks = encode_segment(Layout(2, 4, MIN_BLOCK_BYTES), bytes(range(20)))
    assert [bytes(b).hex() for b in blocks] == [
        "00010203040506070809",
        "0a0b0c0d0e0f10111213",
        "067c057ff389f8820a70",
        "057ff389f08a0a70fa80",
    ]


# -- any k of n -----------------------------------------------------------------------------


@pytest.mark.parametrize(("k", "n"), [(1, 3), (2, 4), (3, 10), (4, 8), (5, 12), (6, 12), (10, 16)])
def test_every_k_subset_decodes(k: int, n: int) -> None:
    """Exhaustive: the Cauchy code is MDS where the Vandermonde one is not (e.g. (10, 16))."""
    layout = Layout(k, n, MIN_BLOCK_BYTES)
    sealed = random.Random(n).randbytes(3 * k + TAG_BYTES)
    blocks = encode_segment(layout, sealed)
    for subset in itertools.combinations(range(n), k):
        assert decode_segment(layout, {i: blocks[i] for i in subset}, len(sealed)) == sealed


def test_widest_layout_decodes_from_parity_only() -> None:
    layout = Layout(MAX_SHARES // 2, MAX_SHARES, MIN_BLOCK_BYTES)
    sealed = random.Random(1).randbytes(layout.k * MIN_BLOCK_BYTES)
    blocks = encode_segment(layout, sealed)
    parity = {i: blocks[i] for i in range(layout.k, layout.n)}
    assert decode_segment(layout, parity, len(sealed)) == sealed
    rng = random.Random(2)
    for _ in range(20):
        subset = rng.sample(range(layout.n), layout.k)
        assert decode_segment(layout, {i: blocks[i] for i in subset}, len(sealed)) == sealed


# -- files end to end ------------------------------------------------------------------------


def upload(layout: Layout, data: bytes) -> tuple[list[bytes], list[list[bytes]]]:
    """encrypt -> encode; returns the n shares and each share's block roots."""
    cipher = SegmentCipher(KEY, FILE_ID)
    count = layout.segment_count(len(data))
    shares = [bytearray() for _ in range(layout.n)]
    roots: list[list[bytes]] = [[] for _ in range(layout.n)]
    for j in range(count):
        start, stop = layout.segment_span(len(data), j)
        sealed = cipher.encrypt(j, data[start:stop], last=j == count - 1)
        assert len(sealed) == layout.sealed_size(len(data), j)
        for i, block in enumerate(encode_segment(layout, sealed)):
            assert len(block) == layout.block_size(len(data), j)
            assert len(shares[i]) == layout.block_offset(j)
            shares[i] += block
            roots[i].append(block_root(block))
    return [bytes(s) for s in shares], roots


def download(layout: Layout, size: int, shares: dict[int, bytes], roots: list[bytes]) -> bytes:
    """Verify every block, decode, decrypt; ``roots`` are the share roots (the manifest's)."""
    cipher = SegmentCipher(KEY, FILE_ID)
    count = layout.segment_count(size)
    block_roots = {}
    for i, share in shares.items():
        block_roots[i] = [
            block_root(share[layout.block_offset(j) :][: layout.block_size(size, j)])
            for j in range(count)
        ]  # a real client fetches these from the provider; checked the same way
        verify_block_roots(block_roots[i], roots[i], share=i, segments=count)
    out = []
    for j in range(count):
        blocks = {}
        for i, share in shares.items():
            block = share[layout.block_offset(j) :][: layout.block_size(size, j)]
            verify_block(block, block_roots[i][j], share=i, segment=j)
            blocks[i] = block
        sealed = decode_segment(layout, blocks, layout.sealed_size(size, j))
        out.append(cipher.decrypt(j, sealed, last=j == count - 1))
    return b"".join(out)


@st.composite
def cases(draw: st.DrawFn) -> tuple[Layout, int, list[int]]:
    n = draw(st.integers(2, 10))
    k = draw(st.integers(1, n - 1))
    layout = Layout(
        k, n, draw(st.sampled_from([MIN_BLOCK_BYTES, 2 * MIN_BLOCK_BYTES, 4 * MIN_BLOCK_BYTES]))
    )
    seg = layout.segment_bytes
    edges = [0, 1, LEAF_BYTES - 1, LEAF_BYTES, LEAF_BYTES + 1, seg - 1, seg, seg + 1, 2 * seg]
    size = draw(st.one_of(st.sampled_from(edges), st.integers(0, 3 * seg + 7)))
    subset = draw(st.permutations(range(n)))[:k]
    return layout, size, sorted(subset)


@settings(max_examples=60, deadline=None)
@given(cases())
def test_any_k_shares_give_back_the_file(case: tuple[Layout, int, list[int]]) -> None:
    layout, size, subset = case
    data = random.Random(size).randbytes(size)
    shares, roots = upload(layout, data)
    share_roots = [share_root(r) for r in roots]
    for i, share in enumerate(shares):
        assert len(share) == layout.share_size(size)
        assert share_roots[i] == root_of_bytes(share)  # block roots are interior nodes
    assert download(layout, size, {i: shares[i] for i in subset}, share_roots) == data


def test_a_flipped_bit_names_its_share_and_segment() -> None:
    layout = Layout(2, 4, MIN_BLOCK_BYTES)
    size = 2 * layout.segment_bytes + 300  # three segments, the last one short
    data = random.Random(7).randbytes(size)
    shares, roots = upload(layout, data)
    share_roots = [share_root(r) for r in roots]
    rng = random.Random(8)
    for share in range(layout.n):
        for segment in range(3):
            offset = layout.block_offset(segment)
            pos = offset + rng.randrange(layout.block_size(size, segment))
            bad = bytearray(shares[share])
            bad[pos] ^= 1 << rng.randrange(8)
            damaged = {i: bytes(bad) if i == share else shares[i] for i in range(layout.n)}
            with pytest.raises(IntegrityError, match=f"share {share}, segment {segment}:"):
                verify_block(
                    bad[offset:][: layout.block_size(size, segment)],
                    roots[share][segment],
                    share=share,
                    segment=segment,
                )
            others = {i: s for i, s in damaged.items() if i != share}
            assert download(layout, size, others, share_roots) == data
            with pytest.raises(IntegrityError, match=f"share {share}"):
                download(layout, size, damaged, share_roots)


def test_block_roots_lists_are_checked() -> None:
    layout = Layout(2, 3, MIN_BLOCK_BYTES)
    size = 3 * layout.segment_bytes
    _, roots = upload(layout, bytes(size))
    root = share_root(roots[0])
    verify_block_roots(roots[0], root, share=0, segments=3)
    with pytest.raises(IntegrityError, match="share 0: 2 block roots"):
        verify_block_roots(roots[0][:2], root, share=0, segments=3)
    with pytest.raises(IntegrityError, match="do not match"):
        verify_block_roots([roots[0][1], roots[0][0], roots[0][2]], root, share=0, segments=3)
    with pytest.raises(IntegrityError, match="malformed"):
        verify_block_roots([b"x", b"y", b"z"], root, share=0, segments=3)


def test_a_leaf_path_is_its_block_path_then_the_block_roots_path() -> None:
    """Block roots are interior nodes: a challenge answer for a leaf is its path inside the
    block followed by the block's path among the share's block roots."""
    layout = Layout(2, 3, 4 * MIN_BLOCK_BYTES)
    size = 4 * layout.segment_bytes + 5000
    shares, roots = upload(layout, random.Random(3).randbytes(size))
    leaves = leaf_hashes(shares[1])
    per_block = layout.block_bytes // LEAF_BYTES
    for leaf in range(len(leaves)):
        j, t = divmod(leaf, per_block)
        in_block = leaf_hashes(shares[1][layout.block_offset(j) :][: layout.block_size(size, j)])
        assert inclusion_proof(leaves, leaf) == (
            inclusion_proof(in_block, t) + inclusion_proof(roots[1], j)
        )


def test_empty_and_tiny_files() -> None:
    layout = default_layout(4, 8)
    for size in (0, 1, 15, 16, 17):
        shares, roots = upload(layout, b"z" * size)
        assert all(len(s) == -(-(size + TAG_BYTES) // 4) for s in shares)
        got = download(
            layout, size, {i: shares[i] for i in (4, 5, 6, 7)}, [share_root(r) for r in roots]
        )
        assert got == b"z" * size
    wide = Layout(40, 64, MIN_BLOCK_BYTES)  # more data blocks than sealed bytes: 1-byte blocks
    shares, roots = upload(wide, b"")
    assert {len(s) for s in shares} == {1}
    got = download(wide, 0, {i: shares[i] for i in range(24, 64)}, [share_root(r) for r in roots])
    assert got == b""


# -- layouts and arguments -------------------------------------------------------------------


def test_default_layouts() -> None:
    assert MIN_BLOCK_BYTES % LEAF_BYTES == 0  # every full block is whole leaves
    assert default_layout(4, 8) == Layout(4, 8, 1 << 20)
    assert default_layout(4, 8).segment_bytes == (4 << 20) - TAG_BYTES
    assert default_layout(3, 10).block_bytes == 1 << 20
    assert default_layout(10, 16).block_bytes == 256 << 10
    assert default_layout(63, 64).block_bytes == 64 << 10
    assert default_layout(2, 3, target_segment=1).block_bytes == MIN_BLOCK_BYTES
    for k in range(1, MAX_SHARES):
        layout = default_layout(k, k + 1)
        assert layout.segment_bytes + TAG_BYTES <= 4 << 20


@pytest.mark.parametrize(
    ("k", "n", "block"),
    [
        (0, 2, 1024),
        (2, 2, 1024),
        (3, 2, 1024),
        (4, MAX_SHARES + 1, 1024),
        (1, 2, 512),
        (1, 2, 3 * 1024),
        (1, 2, 32 << 20),
        (8, 16, 16 << 20),
    ],
)
def test_bad_layouts(k: int, n: int, block: int) -> None:
    with pytest.raises(UsageError):
        Layout(k, n, block)


def test_bad_codec_arguments() -> None:
    layout = Layout(2, 4, MIN_BLOCK_BYTES)
    with pytest.raises(UsageError):
        default_layout(0, 1)
    with pytest.raises(UsageError):
        encode_segment(layout, b"x" * (TAG_BYTES - 1))
    with pytest.raises(UsageError):
        encode_segment(layout, b"x" * (2 * MIN_BLOCK_BYTES + 1))
    sealed = bytes(range(40))
    blocks = encode_segment(layout, bytearray(sealed))
    assert decode_segment(layout, {0: blocks[0], 3: blocks[3]}, 40) == sealed
    assert decode_segment(layout, {1: bytearray(blocks[1]), 0: blocks[0]}, 40) == sealed
    with pytest.raises(UsageError, match="needs 2 blocks"):
        decode_segment(layout, {3: blocks[3]}, 40)
    with pytest.raises(UsageError, match="no share 4"):
        decode_segment(layout, {0: blocks[0], 4: blocks[3]}, 40)
    with pytest.raises(UsageError, match="not 20"):
        decode_segment(layout, {0: blocks[0], 1: bytes(blocks[1])[:-1]}, 40)
    with pytest.raises(UsageError):
        decode_segment(layout, {0: blocks[0], 1: blocks[1]}, 2 * MIN_BLOCK_BYTES + 1)
