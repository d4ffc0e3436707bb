// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";

/// @title NuxCoin: the Nuclux payment token.
/// @notice A plain OpenZeppelin ERC-20 with EIP-2612 permits. The whole supply is minted once,
/// at deploy, to `holder`; nothing can mint or burn afterwards, so the supply is conserved.
contract NuxCoin is ERC20, ERC20Permit {
    constructor(address holder, uint256 supply) ERC20("NuxCoin", "NUX") ERC20Permit("NuxCoin") {
        _mint(holder, supply);
    }
}
