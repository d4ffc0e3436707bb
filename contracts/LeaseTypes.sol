// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

// Resource classes: 0 storage (price per GiB-epoch), 1 compute (per million fuel),
// 2 bandwidth (per GiB of egress).
uint8 constant NUM_CLASSES = 3;

/// The lease states. The transition table lives in `nuclux.core.lease` and is mirrored here.
enum State {
    None,
    Nascent,
    Ticketed,
    Active,
    ActiveTicketed,
    Closing,
    Closed,
    Failed
}

/// What a settlement module sees of a lease when it computes an entitlement.
struct LeaseView {
    uint64 units;
    uint128 price;
    uint32 startEpoch;
    uint32 endEpoch;
}

/// A per-class settlement module authorised by the LeaseManager.
interface ISettlementModule {
    /// Total amount the provider has earned on lease `id` up to `nowEpoch`, before the
    /// LeaseManager caps it at the escrow. Must be monotone in time for a given lease.
    function entitlement(uint256 id, LeaseView calldata lease, uint256 nowEpoch)
        external
        view
        returns (uint256);
}
