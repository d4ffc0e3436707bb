// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ISettlementModule, LeaseView} from "../LeaseTypes.sol";

interface IFaultSink {
    function reportFault(uint256 id, bytes32 reason) external returns (bool);
}

/// @title TestFaultModule: time accrual plus a fault trigger, for testing the penalty ladder.
/// @notice Never deployed by `nuclux chain deploy`. Real modules report faults after verifying
/// a missed or invalid proof; this one lets tests report one directly.
contract TestFaultModule is ISettlementModule {
    function entitlement(uint256, LeaseView calldata l, uint256 nowEpoch)
        external
        pure
        returns (uint256)
    {
        uint256 upTo = nowEpoch < l.endEpoch ? nowEpoch : l.endEpoch;
        if (upTo <= l.startEpoch) return 0;
        return uint256(l.units) * uint256(l.price) * (upTo - l.startEpoch);
    }

    function fault(IFaultSink lm, uint256 id, bytes32 reason) external returns (bool) {
        return lm.reportFault(id, reason);
    }
}
