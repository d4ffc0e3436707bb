// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title TimestampAnchor: batched time-stamps for manifests.
/// @notice A client collects the hashes of the manifests it wrote since its last anchor, builds
/// the RFC 9162 Merkle tree over them and anchors the root in one transaction. A manifest is
/// then time-stamped by its inclusion path to an anchored root: it existed no later than that
/// root's block. Only the first anchoring of a root counts (a later one would only make the
/// time-stamp worse), so anchoring a root twice reverts.
contract TimestampAnchor {
    struct Anchor {
        uint64 time;
        uint64 blockNumber;
    }

    error ZeroRoot();
    error AlreadyAnchored(bytes32 root, uint256 time);

    event Anchored(bytes32 indexed root, address indexed by, uint256 time, uint256 blockNumber);

    mapping(bytes32 root => Anchor) internal _anchors;

    function anchor(bytes32 root) external {
        if (root == 0) revert ZeroRoot();
        Anchor storage a = _anchors[root];
        if (a.time != 0) revert AlreadyAnchored(root, a.time);
        a.time = uint64(block.timestamp);
        a.blockNumber = uint64(block.number);
        emit Anchored(root, msg.sender, block.timestamp, block.number);
    }

    /// When `root` was first anchored: the block's time and number; (0, 0) if it never was.
    function anchoredAt(bytes32 root) external view returns (uint256 time, uint256 blockNumber) {
        Anchor storage a = _anchors[root];
        return (a.time, a.blockNumber);
    }
}
