// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title KeyDirectory: any account publishes its X25519 encryption key.
/// @notice File keys are enveloped to these keys when data is shared with an address.
contract KeyDirectory {
    error ZeroKey();

    event KeyPublished(address indexed account, bytes32 x25519Key);

    mapping(address account => bytes32 key) public keyOf;

    function publish(bytes32 x25519Key) external {
        if (x25519Key == bytes32(0)) revert ZeroKey();
        keyOf[msg.sender] = x25519Key;
        emit KeyPublished(msg.sender, x25519Key);
    }
}
