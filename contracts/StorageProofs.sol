// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// Verification of the packed storage proofs `StorageSettlement` takes: one leaf of a share,
/// its audit path to the share root and the share entry's path to the lease root, hashed with
/// the sha256 precompile (Merkle suite 2: `docs/spec/shares.md`, `docs/spec/storage-proofs.md`).
abstract contract StorageProofs {
    uint256 public constant LEAF_BYTES = 256;

    // Which check a proof failed (argument of BadProof).
    uint8 public constant LEAF_SIZE = 1;
    uint8 public constant SHARE_PATH = 2;
    uint8 public constant LEASE_PATH = 3;
    uint8 public constant ROOT_MISMATCH = 4;
    uint8 public constant ENCODING = 5;

    error BadProof(uint256 id, uint8 check);

    /// Check the packed proof at calldata `[off, off + len)` proves the challenged leaf of
    /// share `share` (of `shareCount`) under `root`; the leaf index is the low 128 bits of `c`
    /// modulo the share's leaf count. The proof, every integer big-endian:
    ///
    ///     uint64 leafCount || uint16 leafLength || leaf || sharePath || leasePath
    ///
    /// `leafCount`: the share's leaves (bound by its lease entry); the leaf: LEAF_BYTES bytes,
    /// 1 to LEAF_BYTES if it is the share's last; `sharePath`: the leaf's RFC 9162 audit path
    /// to the share root, `leasePath` the share entry's to the lease root, 32-byte hashes
    /// bottom-up, each exactly as many as the tree's shape has siblings (no lengths sent).
    function _verify(
        uint256 id,
        bytes32 root,
        uint256 share,
        uint256 shareCount,
        uint256 c,
        uint256 off,
        uint256 len
    ) internal view {
        if (len < 10) revert BadProof(id, ENCODING);
        uint256 leafCount;
        uint256 n;
        assembly ("memory-safe") {
            leafCount := shr(192, calldataload(off))
            n := shr(240, calldataload(add(off, 8)))
        }
        if (leafCount == 0) revert BadProof(id, LEAF_SIZE);
        uint256 leafIndex = uint128(c) % leafCount;
        if (n == 0 || n > LEAF_BYTES || (n != LEAF_BYTES && leafIndex + 1 != leafCount)) {
            revert BadProof(id, LEAF_SIZE);
        }
        uint256 end = off + len;
        uint256 p = off + 10 + n;
        if (p > end) revert BadProof(id, ENCODING);
        bytes32 h;
        (h, p) = _climb(_leafHash(off + 10, n), leafIndex, leafCount, p);
        if (p > end) revert BadProof(id, SHARE_PATH);
        (h, p) = _climb(_entryHash(h, leafCount), share, shareCount, p);
        if (p != end) revert BadProof(id, LEASE_PATH);
        if (h != root) revert BadProof(id, ROOT_MISMATCH);
    }

    /// Where `b` starts in calldata.
    function _offset(bytes calldata b) internal pure returns (uint256 off) {
        assembly ("memory-safe") {
            off := b.offset
        }
    }

    /// sha256(0x00 || leaf), the leaf at calldata `[off, off + n)`
    function _leafHash(uint256 off, uint256 n) internal view returns (bytes32 h) {
        assembly ("memory-safe") {
            let buf := mload(0x40)
            mstore8(buf, 0)
            calldatacopy(add(buf, 1), off, n)
            if iszero(staticcall(gas(), 2, buf, add(n, 1), 0, 32)) { revert(0, 0) }
            h := mload(0)
        }
    }

    /// sha256(0x02 || shareRoot || uint64be(leafCount))
    function _entryHash(bytes32 shareRoot, uint256 leafCount) internal view returns (bytes32 h) {
        assembly ("memory-safe") {
            let buf := mload(0x40)
            mstore8(buf, 2)
            mstore(add(buf, 1), shareRoot)
            mstore(add(buf, 33), shl(192, leafCount))
            if iszero(staticcall(gas(), 2, buf, 41, 0, 32)) { revert(0, 0) }
            h := mload(0)
        }
    }

    /// Climb from entry `index` (< `count`) with hash `h` to the root, node hashes
    /// sha256(0x01 || left || right), taking the audit path's hashes from calldata at `p`:
    /// one per level where the entry's subtree has a sibling (RFC 9162, section 2.1.3.2: the
    /// sibling is on the left when `fn` is odd, on the right when `fn < sn`, and a last node
    /// with none moves up unchanged). Returns the root and where the path ended; the caller
    /// checks that lies within the proof (a hash read past it is rejected there).
    function _climb(bytes32 h, uint256 index, uint256 count, uint256 p)
        internal
        view
        returns (bytes32 r, uint256 q)
    {
        assembly ("memory-safe") {
            let buf := mload(0x40)
            mstore8(buf, 1)
            let left := add(buf, 1)
            let right := add(buf, 33)
            let fn := index
            let sn := sub(count, 1)
            r := h
            q := p
            for {} sn {} {
                switch and(fn, 1)
                case 1 {
                    mstore(left, calldataload(q))
                    mstore(right, r)
                    if iszero(staticcall(gas(), 2, buf, 65, 0, 32)) { revert(0, 0) }
                    r := mload(0)
                    q := add(q, 32)
                }
                default {
                    if lt(fn, sn) {
                        mstore(left, r)
                        mstore(right, calldataload(q))
                        if iszero(staticcall(gas(), 2, buf, 65, 0, 32)) { revert(0, 0) }
                        r := mload(0)
                        q := add(q, 32)
                    }
                }
                fn := shr(1, fn)
                sn := shr(1, sn)
            }
        }
    }
}
