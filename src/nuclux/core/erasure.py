"""Reed-Solomon k-of-n over sealed segments, and the share layout that makes blocks checkable.

Theory of operation
-------------------
Each sealed segment (``nuclux.core.segment``: ciphertext || tag) is cut into ``k`` data blocks
and extended with ``n - k`` parity blocks; block ``i`` of every segment goes to provider ``i``,
and the concatenation of a provider's blocks, in segment order, is its *share*. Any ``k`` blocks
of a segment rebuild it. Byte-exact rules (``docs/spec/shares.md``)::

    L = len(sealed segment), 16 <= L <= k * B        B = layout.block_bytes
    P = ceil(L / k)                                   every block of the segment is P bytes
    data block j < k  = sealed[j*P : (j+1)*P], zero-padded to P bytes
    parity block i >= k, byte t = XOR over j < k of  C[i][j] * data_j[t]   in GF(2^8)
    C[i][j] = 1 / (i XOR j)   (a Cauchy matrix; GF(2^8) with polynomial 0x11D)

The code is computed by Intel ISA-L through pyeclib (``EC_TYPE``). We use its Cauchy backend,
not ``isa_l_rs_vand``: the latter's matrix is not MDS for many (k, n) (for example 46 of the
8008 ten-block subsets of (10, 16), and some subsets of (5, 12), (6, 12), (8, 16) cannot be
decoded, measured with pyeclib 1.8.0), whereas every square submatrix of a Cauchy matrix is
invertible, so any ``k`` blocks decode for every ``1 <= k < n <= 256``. ``MAX_SHARES`` bounds
``n`` at 64: more providers per file buys no durability worth the connections, manifest size and
decode cost.

pyeclib prefixes each fragment with an 80-byte header of its own (sizes, index, library
version, a header checksum). Shares never store it: a block is the fragment's payload only, so
the stored bytes are defined by the rules above and not by a library's header format. To decode,
the headers are rebuilt from an encoding of ``L`` zero bytes (headers do not depend on the data;
cached per ``(k, n, L)``). pyeclib checks only its header, never the payload: a corrupted block
decodes silently to wrong bytes. Integrity therefore comes from the Merkle check of every block
*before* decoding (and from the GCM tag after).

Layout: full segments are sized so their blocks are exactly ``B`` bytes, ``B`` a power of two
from 1 KiB (``MIN_BLOCK_BYTES``, a whole number of ``LEAF_BYTES`` leaves): ``segment_bytes =
k * B - 16`` (the tag fills the rest). So in every
share, block ``j`` starts at ``j * B`` and covers whole leaves; only the last segment's blocks
are shorter (``P`` bytes, with a short final leaf). Every block's Merkle root is then an interior
node of the share tree, and the share root is the MTH over the block roots (``merkle.py``
explains why). A downloader fetches a share's block roots (32 bytes a segment; from a provider,
checked against the share root in the manifest) and checks each block as it arrives by hashing
it: no per-block proofs, no buffering of a whole share.

pyeclib takes and returns only ``bytes`` (a bytearray fragment aborts the process in its C code),
so everything is converted before it is called, and inputs are checked here first.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from pyeclib.ec_iface import ECDriver, ECDriverError

from nuclux.core.merkle import merkle_root, root_of_bytes
from nuclux.core.segment import MAX_SEGMENT_BYTES, TAG_BYTES, segment_count, segment_span
from nuclux.errors import IntegrityError, UsageError

EC_TYPE: Final = "isa_l_rs_cauchy"
MAX_SHARES: Final = 64
FRAGMENT_HEADER_BYTES: Final = 80  # pyeclib's; never stored
MIN_BLOCK_BYTES: Final = 1024  # four 256-byte Merkle leaves (one leaf of Merkle suite 1)
MAX_BLOCK_BYTES: Final = 16 << 20
DEFAULT_SEGMENT_TARGET: Final = 4 << 20

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class Layout:
    """How a file is cut and coded: ``k`` of ``n`` blocks rebuild a segment; full blocks are
    ``block_bytes`` (a power of two from ``MIN_BLOCK_BYTES``: whole ``LEAF_BYTES`` leaves)."""

    k: int
    n: int
    block_bytes: int

    def __post_init__(self) -> None:
        if not 1 <= self.k < self.n <= MAX_SHARES:
            raise UsageError(
                f"erasure coding needs 1 <= k < n <= {MAX_SHARES}, not {self.k}-of-{self.n}"
            )
        b = self.block_bytes
        if not MIN_BLOCK_BYTES <= b <= MAX_BLOCK_BYTES or b & (b - 1):
            raise UsageError(
                f"block_bytes must be a power of two from {MIN_BLOCK_BYTES} "
                f"to {MAX_BLOCK_BYTES}, not {b}"
            )
        if self.k * b - TAG_BYTES > MAX_SEGMENT_BYTES:
            raise UsageError(f"k * block_bytes exceeds the {MAX_SEGMENT_BYTES}-byte segment bound")

    @property
    def segment_bytes(self) -> int:
        """Plaintext bytes in a full segment: its sealed form is exactly ``k`` blocks."""
        return self.k * self.block_bytes - TAG_BYTES

    def segment_count(self, file_size: int) -> int:
        return segment_count(file_size, self.segment_bytes)

    def segment_span(self, file_size: int, index: int) -> tuple[int, int]:
        """The plaintext range ``[start, stop)`` of segment ``index``."""
        return segment_span(file_size, self.segment_bytes, index)

    def sealed_size(self, file_size: int, index: int) -> int:
        """Bytes of segment ``index`` once sealed (plaintext + tag)."""
        start, stop = self.segment_span(file_size, index)
        return stop - start + TAG_BYTES

    def block_size(self, file_size: int, index: int) -> int:
        """Bytes of every block of segment ``index``: ``block_bytes`` except for the last."""
        return -(-self.sealed_size(file_size, index) // self.k)

    def block_offset(self, index: int) -> int:
        """Where block ``index`` starts in a share (all earlier blocks are full)."""
        return index * self.block_bytes

    def share_size(self, file_size: int) -> int:
        """Bytes of each share (all ``n`` shares are the same size)."""
        last = self.segment_count(file_size) - 1
        return last * self.block_bytes + self.block_size(file_size, last)


def default_layout(k: int, n: int, target_segment: int = DEFAULT_SEGMENT_TARGET) -> Layout:
    """The layout with the largest blocks that keep a segment within ``target_segment``
    (at least ``MIN_BLOCK_BYTES``). With the 4 MiB default: RS(4,8) has 1 MiB blocks."""
    if not 1 <= k < n <= MAX_SHARES:
        raise UsageError(f"erasure coding needs 1 <= k < n <= {MAX_SHARES}, not {k}-of-{n}")
    units = max(1, target_segment // (k * MIN_BLOCK_BYTES))
    block = min(MIN_BLOCK_BYTES << (units.bit_length() - 1), MAX_BLOCK_BYTES)
    return Layout(k, n, block)


@functools.lru_cache(maxsize=16)
def _driver(k: int, n: int) -> ECDriver:
    return ECDriver(k=k, m=n - k, ec_type=EC_TYPE)


@functools.lru_cache(maxsize=64)
def _headers(k: int, n: int, sealed_size: int) -> tuple[bytes, ...]:
    """pyeclib's fragment headers for a ``sealed_size``-byte input (data-independent)."""
    fragments = _driver(k, n).encode(bytes(sealed_size))
    return tuple(f[:FRAGMENT_HEADER_BYTES] for f in fragments)


def encode_segment(layout: Layout, sealed: Buffer) -> list[memoryview]:
    """The ``n`` blocks of one sealed segment (read-only views; ``bytes(view)`` to keep one
    beyond the others)."""
    size = len(sealed)
    if not TAG_BYTES <= size <= layout.k * layout.block_bytes:
        raise UsageError(
            f"a sealed segment is {TAG_BYTES} to {layout.k * layout.block_bytes} bytes "
            f"for this layout, not {size}"
        )
    data = sealed if isinstance(sealed, bytes) else bytes(sealed)
    fragments = _driver(layout.k, layout.n).encode(data)
    return [memoryview(f)[FRAGMENT_HEADER_BYTES:] for f in fragments]


def decode_segment(layout: Layout, blocks: Mapping[int, Buffer], sealed_size: int) -> bytes:
    """Rebuild a ``sealed_size``-byte sealed segment from any ``k`` of its blocks, given as
    ``{share index: block}``. Blocks must have been verified (``verify_block``) first: a wrong
    block decodes to wrong bytes without complaint."""
    k, n = layout.k, layout.n
    if not TAG_BYTES <= sealed_size <= k * layout.block_bytes:
        raise UsageError(f"a sealed segment of {sealed_size} bytes does not fit this layout")
    size = -(-sealed_size // k)
    for i, block in blocks.items():
        if not 0 <= i < n:
            raise UsageError(f"no share {i} in a {k}-of-{n} layout")
        if len(block) != size:
            raise UsageError(f"share {i}'s block is {len(block)} bytes, not {size}")
    chosen = sorted(blocks)[:k]  # data blocks first: decoding from them is a copy
    if len(chosen) < k:
        raise UsageError(f"a segment needs {k} blocks to decode, got {len(chosen)}")
    if chosen[-1] == k - 1:
        return b"".join([blocks[i] for i in chosen])[:sealed_size]
    headers = _headers(k, n, sealed_size)
    fragments = [headers[i] + blocks[i] for i in chosen]
    try:
        out = _driver(k, n).decode(fragments)
    except ECDriverError as err:  # not expected for checked blocks (the code is MDS)
        raise IntegrityError(f"blocks {chosen} could not be decoded: {err}") from None
    if len(out) != sealed_size:
        raise IntegrityError(f"decoding gave {len(out)} bytes, not {sealed_size}")
    return bytes(out)


def block_root(block: Buffer) -> bytes:
    """The Merkle root of one block: an interior node of its share's tree."""
    return root_of_bytes(block)


def share_root(block_roots: Sequence[bytes]) -> bytes:
    """A share's root from its blocks' roots, in segment order (equals the root of the share's
    bytes split into leaves)."""
    return merkle_root(block_roots)


def verify_block(block: Buffer, expected_root: bytes, *, share: int, segment: int) -> None:
    """Check one block against its block root; ``IntegrityError`` names the share and segment."""
    if not hmac.compare_digest(root_of_bytes(block), expected_root):
        raise IntegrityError(
            f"share {share}, segment {segment}: the block does not match its Merkle root"
        )


def verify_block_roots(
    block_roots: Sequence[bytes], expected_root: bytes, *, share: int, segments: int
) -> None:
    """Check a share's block-root list (as fetched from a provider) against the share root
    from the manifest and the file's segment count."""
    if len(block_roots) != segments:
        raise IntegrityError(
            f"share {share}: {len(block_roots)} block roots for a file of {segments} segments"
        )
    try:
        root = merkle_root(block_roots)
    except UsageError:
        raise IntegrityError(f"share {share}: malformed block roots") from None
    if not hmac.compare_digest(root, expected_root):
        raise IntegrityError(f"share {share}: the block roots do not match the share root")
