"""SHA-256 Merkle trees over shares and leases, with RFC 9162 inclusion proofs.

Theory of operation
-------------------
A provider proves it still holds a share by answering a challenge with one leaf of the share
and that leaf's audit path to the share root, and the share root's audit path to the lease
root both sides signed. The storage contract checks the same hashes with the EVM's sha256
precompile, so the definitions below are frozen (``docs/spec/shares.md``) and mirrored in
Solidity::

    leaf_hash(d)       = sha256(0x00 || d)          1 <= len(d) <= LEAF_BYTES
    node_hash(l, r)    = sha256(0x01 || l || r)
    entry_hash(root,c) = sha256(0x02 || root || c as u64 big-endian)

A share is split into ``LEAF_BYTES`` leaves; only its last leaf may be shorter. The tree shape
is RFC 9162 section 2.1 (the RFC 6962 shape): the Merkle tree hash (MTH) of one entry is that
entry's hash; of n > 1 entries it is ``node_hash(MTH(D[:k]), MTH(D[k:]))`` with ``k`` the
largest power of two below n; the MTH of no entries is ``sha256(b"")``. A lease root is the
MTH over ``entry_hash(share_root, leaf_count)`` of the lease's shares, in the lease's order
(the leaf count binds the share's size, so a proof's ``count`` cannot be misstated).

The three one-byte prefixes keep leaves, interior nodes and lease entries apart: no leaf can
pass for a pair of child hashes, and no share root for a lease entry.

Leaf size: 256 bytes (Merkle suite 2; suite 1 had 1 KiB leaves). A storage proof posts one
leaf and its paths as calldata, and under EIP-7623 that calldata is the proof's gas: a 1 KiB
leaf alone cost 41k gas of it, so the proof of a 1 MiB share in a lease of 256 could not come
under 60k. 256-byte leaves mean more hashing per byte (four leaf hashes and four node hashes per
KiB instead of one and one: 28 SHA-256 blocks per KiB, not 19): with OpenSSL, 1.24 ms per MiB
instead of 0.74 on this project's machine; the extension's own SHA-NI code (below) brings it to
0.68.

Computing the shape: the RFC 6962 tree is the left-filled tree, so it is also built level by
level, pairing neighbours and carrying a lone last node up unchanged. Two consequences used
elsewhere: (1) inclusion proofs are the existing siblings on the way up; (2) if the leaves are
grouped in runs of 2**h (the last run may be shorter), the MTH over the runs' roots equals the
MTH over the leaves, so a share made of power-of-two blocks has each block's root as an
interior node (``nuclux.core.erasure`` relies on this).

Speed: bulk hashing (``leaf_hashes``, ``root_of_bytes``, ``merkle_root``, ``MerkleBuilder``)
goes through ``nuclux._merkle``, a small C extension that hashes a whole block per call with
the GIL released (so hashing on a worker thread runs beside the event loop): with the CPU's
SHA extensions it hashes two leaves or nodes at a time with its own SHA-256, else it uses
OpenSSL's. Without it (not built: no compiler or OpenSSL headers) the same functions run in
Python: every hash is one ``hashlib`` call, and with 256-byte leaves the per-call cost, not
SHA-256 itself, is the limit. ``MerkleBuilder`` hashes streamed bytes in bulk and keeps only a
stack of perfect-subtree roots, O(log n) memory.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from nuclux.errors import UsageError

LEAF_BYTES: Final = 256
HASH_BYTES: Final = 32
EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
LEAF_PREFIX: Final = b"\x00"
NODE_PREFIX: Final = b"\x01"
ENTRY_PREFIX: Final = b"\x02"
MAX_LEAVES: Final = 2**48  # 64 TiB of 256-byte leaves: bounds proof length at 48
MAX_PROOF_LENGTH: Final = 48

_sha256 = hashlib.sha256
_LEAF_STATE: Final = hashlib.sha256(LEAF_PREFIX)

Buffer = bytes | bytearray | memoryview


class _Native(Protocol):
    """``nuclux._merkle``'s functions (``leaf_bytes`` is the leaf size)."""

    def leaf_hashes(self, data: Buffer, leaf_bytes: int, /) -> bytes: ...
    def root_of_bytes(self, data: Buffer, leaf_bytes: int, /) -> bytes: ...
    def root_of_hashes(self, hashes: Buffer, /) -> bytes: ...


_native: _Native | None
try:
    from nuclux import _merkle

    _native = _merkle
except ImportError:  # pragma: no cover - the extension is optional (setup.py)
    _native = None


def leaf_hash(data: Buffer) -> bytes:
    """The hash of one leaf of 1 to ``LEAF_BYTES`` bytes."""
    if not 0 < len(data) <= LEAF_BYTES:
        raise UsageError(f"a leaf is 1 to {LEAF_BYTES} bytes, not {len(data)}")
    h = _LEAF_STATE.copy()
    h.update(data)
    return h.digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """The hash of an interior node from its two children's hashes."""
    if len(left) != HASH_BYTES or len(right) != HASH_BYTES:
        raise UsageError("node children are 32-byte hashes")
    return _sha256(NODE_PREFIX + left + right).digest()


def entry_hash(share_root: bytes, leaf_count: int) -> bytes:
    """A lease tree entry: one share's root bound to its number of leaves."""
    if len(share_root) != HASH_BYTES:
        raise UsageError("a share root is a 32-byte hash")
    if not 0 <= leaf_count <= MAX_LEAVES:
        raise UsageError(f"a share has 0 to {MAX_LEAVES} leaves, not {leaf_count}")
    return _sha256(ENTRY_PREFIX + share_root + leaf_count.to_bytes(8, "big")).digest()


def leaf_count(size: int) -> int:
    """How many leaves ``size`` bytes make (the last may be short)."""
    if size < 0:
        raise UsageError("a size cannot be negative")
    return -(-size // LEAF_BYTES)


def leaf_hashes(data: Buffer) -> list[bytes]:
    """The leaf hashes of ``data`` split into ``LEAF_BYTES`` leaves (none for empty data)."""
    if _native is not None:
        joined = _native.leaf_hashes(data, LEAF_BYTES)
        return [joined[i : i + HASH_BYTES] for i in range(0, len(joined), HASH_BYTES)]
    return _py_leaf_hashes(data)


def _py_leaf_hashes(data: Buffer) -> list[bytes]:
    view = memoryview(data).cast("B")
    size = len(view)
    full = size - size % LEAF_BYTES
    out: list[bytes] = []
    append = out.append
    state = _LEAF_STATE
    for off in range(0, full, LEAF_BYTES):
        h = state.copy()
        h.update(view[off : off + LEAF_BYTES])
        append(h.digest())
    if full < size:
        h = state.copy()
        h.update(view[full:])
        append(h.digest())
    return out


def _next_level(level: Sequence[bytes]) -> list[bytes]:
    """Pair neighbours; a lone last node moves up unchanged."""
    sha, p = _sha256, NODE_PREFIX
    pairs = iter(level)
    up = [sha(p + left + right).digest() for left, right in zip(pairs, pairs, strict=False)]
    if len(level) % 2:
        up.append(level[-1])
    return up


def _check_hashes(hashes: Sequence[bytes]) -> None:
    if len(hashes) > MAX_LEAVES:
        raise UsageError(f"a tree has at most {MAX_LEAVES} entries")
    for h in hashes:
        if len(h) != HASH_BYTES:
            raise UsageError("tree entries are 32-byte hashes")


def merkle_root(hashes: Sequence[bytes]) -> bytes:
    """The MTH over already-hashed entries (leaf hashes, block roots or entry hashes)."""
    _check_hashes(hashes)
    return _root(hashes)


def _root(hashes: Sequence[bytes]) -> bytes:
    if not hashes:
        return EMPTY_ROOT
    if _native is not None and len(hashes) > 2:
        return _native.root_of_hashes(b"".join(hashes))
    return _py_root(hashes)


def _py_root(hashes: Sequence[bytes]) -> bytes:
    if not hashes:
        return EMPTY_ROOT
    level = hashes
    while len(level) > 1:
        level = _next_level(level)
    return level[0]


def root_of_bytes(data: Buffer) -> bytes:
    """The root of ``data`` split into ``LEAF_BYTES`` leaves (``EMPTY_ROOT`` when empty)."""
    if _native is not None:
        return _native.root_of_bytes(data, LEAF_BYTES)
    return _py_root(_py_leaf_hashes(data))


def lease_root(entries: Sequence[tuple[bytes, int]]) -> bytes:
    """The lease root over ``(share_root, leaf_count)`` pairs in the lease's order."""
    return merkle_root([entry_hash(root, count) for root, count in entries])


def proof_length(index: int, count: int) -> int:
    """How many hashes the audit path of entry ``index`` in a tree of ``count`` has."""
    if not 0 <= index < count <= MAX_LEAVES:
        raise UsageError(f"no entry {index} in a tree of {count}")
    length, fn, sn = 0, index, count - 1
    while sn:
        if fn % 2 or fn != sn:
            length += 1
        fn, sn = fn >> 1, sn >> 1
    return length


def inclusion_proof(hashes: Sequence[bytes], index: int) -> tuple[bytes, ...]:
    """The RFC 9162 audit path of entry ``index``: sibling hashes, bottom-up."""
    _check_hashes(hashes)
    if not 0 <= index < len(hashes):
        raise UsageError(f"no entry {index} in a tree of {len(hashes)}")
    return _path(_levels(hashes), index)


def inclusion_proofs(hashes: Sequence[bytes]) -> list[tuple[bytes, ...]]:
    """The audit path of every entry (``inclusion_proof`` of each index), the tree built
    once: O(n log n) hashing for all n paths instead of O(n) per path."""
    _check_hashes(hashes)
    levels = _levels(hashes)
    return [_path(levels, index) for index in range(len(hashes))]


def _levels(hashes: Sequence[bytes]) -> list[Sequence[bytes]]:
    """Every level of the tree, from the entries up to (not including) the root's."""
    levels: list[Sequence[bytes]] = []
    level = hashes
    while len(level) > 1:
        levels.append(level)
        level = _next_level(level)
    return levels


def _path(levels: list[Sequence[bytes]], index: int) -> tuple[bytes, ...]:
    """Entry ``index``'s siblings, bottom-up (a lone last node has none at its level)."""
    path: list[bytes] = []
    for level in levels:
        if (sibling := index ^ 1) < len(level):
            path.append(level[sibling])
        index >>= 1
    return tuple(path)


def verify_inclusion(
    leaf_hash: bytes, index: int, count: int, path: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``path`` proves ``leaf_hash`` is entry ``index`` of ``count`` under ``root``
    (RFC 9162 section 2.1.3.2). A path of the wrong length is rejected."""
    if not 0 <= index < count <= MAX_LEAVES or len(path) > MAX_PROOF_LENGTH:
        return False
    if len(leaf_hash) != HASH_BYTES or len(root) != HASH_BYTES:
        return False
    r = path_root(leaf_hash, index, count, path)
    return r is not None and hmac.compare_digest(r, root)


def path_root(leaf_hash: bytes, index: int, count: int, path: Sequence[bytes]) -> bytes | None:
    """The root ``path`` leads to from entry ``index`` of ``count`` with hash ``leaf_hash``
    (RFC 9162 section 2.1.3.2), or None when the path does not fit that shape."""
    if not 0 <= index < count or len(leaf_hash) != HASH_BYTES:
        return None
    fn, sn, r = index, count - 1, leaf_hash
    for p in path:
        if sn == 0 or len(p) != HASH_BYTES:
            return None
        if fn % 2 or fn == sn:
            r = _sha256(NODE_PREFIX + p + r).digest()
            while fn % 2 == 0 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = _sha256(NODE_PREFIX + r + p).digest()
        fn, sn = fn >> 1, sn >> 1
    return r if sn == 0 else None


def perfect_root(hashes: Sequence[bytes]) -> bytes:
    """The MTH of a power-of-two number of entries (no length checks: internal fast path)."""
    if _native is not None and len(hashes) > 2:
        return _native.root_of_hashes(b"".join(hashes))
    level, sha, p = hashes, _sha256, NODE_PREFIX
    while len(level) > 1:
        pairs = iter(level)
        level = [sha(p + left + right).digest() for left, right in zip(pairs, pairs, strict=True)]
    return level[0]


class MerkleBuilder:
    """The root of bytes streamed in chunks of any size, equal to ``root_of_bytes`` of their
    concatenation. Holds less than one leaf of data plus one hash per tree level."""

    __slots__ = ("_count", "_done", "_pending", "_size", "_stack")

    def __init__(self) -> None:
        self._stack: list[tuple[int, bytes]] = []  # (height, root); heights strictly decrease
        self._pending = bytearray()  # a partial leaf: fewer than LEAF_BYTES bytes
        self._count = 0  # whole leaves folded into the stack
        self._size = 0
        self._done = False

    @property
    def size(self) -> int:
        """Bytes taken so far."""
        return self._size

    @property
    def leaf_count(self) -> int:
        """Leaves so far, counting a partial last leaf."""
        return self._count + (1 if self._pending else 0)

    def update(self, data: Buffer) -> None:
        """Take the next bytes of the stream."""
        if self._done:
            raise UsageError("this Merkle builder is finished")
        view = memoryview(data).cast("B")
        if not view:
            return
        self._size += len(view)
        if self._pending:
            need = LEAF_BYTES - len(self._pending)
            self._pending += view[:need]
            view = view[need:]
            if len(self._pending) < LEAF_BYTES:
                return
            self._push([leaf_hash(self._pending)])
            self._pending = bytearray()
        whole = len(view) - len(view) % LEAF_BYTES
        if whole and _native is not None:
            run = view[:whole]
            self._fold(
                whole // LEAF_BYTES,
                lambda a, b: _native.root_of_bytes(
                    run[a * LEAF_BYTES : b * LEAF_BYTES], LEAF_BYTES
                ),
            )
        elif whole:
            self._push(_py_leaf_hashes(view[:whole]))
        self._pending += view[whole:]

    def _push(self, hashes: list[bytes]) -> None:
        """Fold whole-leaf hashes in as the largest aligned perfect subtrees."""
        self._fold(len(hashes), lambda a, b: perfect_root(hashes[a:b]))

    def _fold(self, count: int, run_root: Callable[[int, int], bytes]) -> None:
        """Fold ``count`` more leaves in as the largest aligned perfect subtrees;
        ``run_root(a, b)`` is the root of leaves ``a .. b-1`` of them (a power of two)."""
        if self._count + count > MAX_LEAVES:
            raise UsageError(f"a tree has at most {MAX_LEAVES} leaves")
        start, stack = 0, self._stack
        while start < count:
            left = count - start
            align = self._count & -self._count if self._count else 1 << 62
            size = min(align, 1 << (left.bit_length() - 1))
            height = size.bit_length() - 1
            root = run_root(start, start + size)
            while stack and stack[-1][0] == height:
                root = _sha256(NODE_PREFIX + stack.pop()[1] + root).digest()
                height += 1
            stack.append((height, root))
            self._count += size
            start += size

    def root(self) -> bytes:
        """The root of everything taken; the builder takes no more data afterwards."""
        self._done = True
        if self._pending:
            self._push([leaf_hash(self._pending)])
            self._pending = bytearray()
        if not self._stack:
            return EMPTY_ROOT
        root = self._stack[-1][1]
        for _, left in reversed(self._stack[:-1]):
            root = _sha256(NODE_PREFIX + left + root).digest()
        return root
