// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ISettlementModule, LeaseView} from "./LeaseTypes.sol";

/// @title TimeAccrualSettlement: pay for reserved units per whole epoch elapsed.
/// @notice entitlement = units * price * (min(now, end) - start) epochs. The simplest module;
/// it exercises the ledger. Storage adds proof gating on top of the same accrual.
contract TimeAccrualSettlement is ISettlementModule {
    function entitlement(uint256, LeaseView calldata l, uint256 nowEpoch)
        external
        pure
        returns (uint256)
    {
        uint256 upTo = nowEpoch < l.endEpoch ? nowEpoch : l.endEpoch;
        if (upTo <= l.startEpoch) return 0;
        return uint256(l.units) * uint256(l.price) * (upTo - l.startEpoch);
    }
}
