"""Storage challenges: which epochs are sampled, which leaf answers them, and the proof.

Mirrors ``contracts/StorageSettlement.sol`` exactly (a test compares both on many seeds).

A seed is 64 bits: the first 8 bytes of a block hash fixed in advance (never 0: a zero value
becomes 1). Every choice is a keccak-256 draw over two 32-byte words::

    draw(tag, seed, lease) = keccak256(uint256(tag << 64 | seed) || uint256(lease))

- sampling (tag 0): epoch ``e`` of ``lease`` is sampled when ``draw % one_in == 0``, with
  the seed of epoch ``e``; the last epoch of a term is always sampled;
- challenge (tag 1): ``c = draw(1, seed, lease)``; the share is ``(c >> 128) % share_count``
  (or the share a consumer's demand names, modulo the share count), the leaf
  ``(c mod 2**128) % leaf_count`` where ``leaf_count`` is the one bound in that share's lease
  entry.

A proof is the leaf's bytes, its RFC 9162 audit path to the share root and the share entry's
path to the lease root (``nuclux.core.merkle`` defines the hashes). On chain it travels packed,
not as an ABI struct (``StorageProof.encode``; ``docs/spec/storage-proofs.md`` section 5)::

    uint64 leaf_count || uint16 len(leaf) || leaf || share_path || lease_path

every integer big-endian, every path hash 32 bytes, bottom-up, no counts: each path has as
many hashes as the tree's shape gives (``nuclux.core.merkle.proof_length``), which the contract
derives from the challenged indices and the counts it trusts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from Crypto.Hash import keccak

from nuclux.core.merkle import (
    HASH_BYTES,
    LEAF_BYTES,
    MAX_LEAVES,
    entry_hash,
    inclusion_proof,
    leaf_count,
    leaf_hashes,
    proof_length,
)
from nuclux.errors import UsageError

SAMPLE_TAG: Final = 0
CHALLENGE_TAG: Final = 1
MAX_SEED: Final = 2**64 - 1
_LOW128: Final = 2**128 - 1


def _keccak(data: bytes) -> bytes:
    return keccak.new(digest_bits=256, data=data).digest()


def seed_from_block_hash(block_hash: bytes) -> int:
    """The seed a block hash gives: its first 8 bytes as a number, 0 made 1."""
    if len(block_hash) != 32:
        raise UsageError("a block hash is 32 bytes")
    return int.from_bytes(block_hash[:8], "big") or 1


def draw(tag: int, seed: int, lease_id: int) -> int:
    """keccak256(uint256(tag << 64 | seed) || uint256(lease_id)) as a number."""
    if not 0 < seed <= MAX_SEED:
        raise UsageError("a seed is a non-zero 64-bit number")
    if not 0 <= lease_id < 2**256 or tag not in (SAMPLE_TAG, CHALLENGE_TAG):
        raise UsageError("bad lease id or draw tag")
    word = ((tag << 64) | seed).to_bytes(32, "big") + lease_id.to_bytes(32, "big")
    return int.from_bytes(_keccak(word), "big")


def is_sampled(seed: int, lease_id: int, one_in: int, *, last_epoch: bool = False) -> bool:
    """Whether the epoch with ``seed`` is sampled for ``lease_id`` (probability 1/one_in)."""
    if one_in < 1:
        raise UsageError("the sampling rate is one in a positive number")
    return last_epoch or draw(SAMPLE_TAG, seed, lease_id) % one_in == 0


def challenged_share(seed: int, lease_id: int, share_count: int) -> int:
    """The share a sampled epoch challenges."""
    if share_count < 1:
        raise UsageError("an empty lease has no share to challenge")
    return (draw(CHALLENGE_TAG, seed, lease_id) >> 128) % share_count


def challenged_leaf(seed: int, lease_id: int, leaf_count: int) -> int:
    """The leaf of the challenged (or demanded) share that answers, given its leaf count."""
    if leaf_count < 1:
        raise UsageError("a share with no leaves cannot be challenged")
    return (draw(CHALLENGE_TAG, seed, lease_id) & _LOW128) % leaf_count


@dataclass(frozen=True, slots=True)
class StorageProof:
    """What ``StorageSettlement.prove`` and ``answerDemand`` check, packed by ``encode``."""

    leaf_count: int
    leaf: bytes
    share_path: tuple[bytes, ...]
    lease_path: tuple[bytes, ...]

    def __post_init__(self) -> None:
        if not 0 < self.leaf_count <= MAX_LEAVES or not 0 < len(self.leaf) <= LEAF_BYTES:
            raise UsageError(
                f"a proof has a leaf of 1 to {LEAF_BYTES} bytes of a share with 1 to "
                f"{MAX_LEAVES} leaves"
            )
        if any(len(h) != HASH_BYTES for h in (*self.share_path, *self.lease_path)):
            raise UsageError("path entries are 32-byte hashes")

    def encode(self) -> bytes:
        """The packed form the contract reads: ``uint64 leaf_count || uint16 len(leaf) ||
        leaf || share_path || lease_path``."""
        return b"".join(
            (
                self.leaf_count.to_bytes(8, "big"),
                len(self.leaf).to_bytes(2, "big"),
                self.leaf,
                *self.share_path,
                *self.lease_path,
            )
        )

    @classmethod
    def decode(
        cls, data: bytes, leaf_index: int, share_index: int, share_count: int
    ) -> StorageProof:
        """Read a packed proof for leaf ``leaf_index`` of share ``share_index`` of
        ``share_count`` (the path lengths follow from them, as on chain); ``UsageError`` if it
        does not have exactly that shape."""
        if len(data) < 10:
            raise UsageError("a packed proof has at least 10 bytes")
        count = int.from_bytes(data[:8], "big")
        n = int.from_bytes(data[8:10], "big")
        if not 0 <= leaf_index < count or not 0 <= share_index < share_count:
            raise UsageError("the challenged leaf or share is not in the proof's shape")
        ns, nl = proof_length(leaf_index, count), proof_length(share_index, share_count)
        if len(data) != 10 + n + HASH_BYTES * (ns + nl):
            raise UsageError("the packed proof's length does not fit its shape")
        hashes = data[10 + n :]
        path = tuple(hashes[i : i + HASH_BYTES] for i in range(0, len(hashes), HASH_BYTES))
        return cls(count, data[10 : 10 + n], path[:ns], path[ns:])


def build_proof(
    entries: Sequence[tuple[bytes, int]],
    share_index: int,
    leaf_index: int,
    share_leaf_hashes: Sequence[bytes],
    leaf: bytes,
) -> StorageProof:
    """The proof of leaf ``leaf_index`` of share ``share_index``, given the lease's entries
    (share root, leaf count) and that share's leaf hashes."""
    if not 0 <= share_index < len(entries):
        raise UsageError(f"no share {share_index} in a lease of {len(entries)}")
    _, count = entries[share_index]
    if count != len(share_leaf_hashes):
        raise UsageError("the share's leaf hashes do not match its lease entry")
    lease_hashes = [entry_hash(root, n) for root, n in entries]
    return StorageProof(
        leaf_count=count,
        leaf=leaf,
        share_path=inclusion_proof(share_leaf_hashes, leaf_index),
        lease_path=inclusion_proof(lease_hashes, share_index),
    )


def answer_from_shares(
    entries: Sequence[tuple[bytes, int]],
    share_index: int,
    seed: int,
    lease_id: int,
    share_data: bytes,
) -> StorageProof:
    """The proof for a challenge on share ``share_index`` with ``seed``, from that share's
    bytes held in memory (a small share, or a test)."""
    count = leaf_count(len(share_data))
    leaf = challenged_leaf(seed, lease_id, count)
    data = share_data[leaf * LEAF_BYTES : (leaf + 1) * LEAF_BYTES]
    return build_proof(entries, share_index, leaf, leaf_hashes(share_data), data)
