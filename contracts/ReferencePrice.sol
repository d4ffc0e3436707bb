// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {NUM_CLASSES} from "./LeaseTypes.sol";

/// The consensus reference price of each resource class, kept by the AuctionHouse.
///
/// Qualifying clearings (the house decides which: at least REF_MIN_BIDDERS revealed bids
/// from staked, registered providers, and no excluded providers) are kept per class in a
/// ring of the last REF_WINDOW; `referencePrice` is their value-weighted (price x volume)
/// lower median, as `nuclux.core.market_price.reference_price(window=REF_WINDOW,
/// min_bidders=REF_MIN_BIDDERS)`.
abstract contract ReferencePrice {
    /// One qualifying clearing as the reference price sees it.
    struct Clearing {
        uint128 price;
        uint128 volume; // winners x units x term
    }

    uint256 public constant REF_WINDOW = 32;
    uint256 public constant REF_MIN_BIDDERS = 3;

    error InvalidClass(uint8 cls);

    mapping(uint8 cls => Clearing[REF_WINDOW]) internal _ring;
    /// Qualifying clearings recorded per class so far (the ring holds the last REF_WINDOW).
    mapping(uint8 cls => uint256) public clearingsRecorded;

    /// The consensus reference price of `cls`: the value-weighted lower median of the last
    /// REF_WINDOW qualifying clearings (0 when there is none), and how many of them count.
    function referencePrice(uint8 cls) external view returns (uint256 price, uint256 count) {
        (uint256[] memory prices, uint256[] memory volumes) = recentClearings(cls);
        uint256 n = 0;
        uint256 total = 0;
        uint256[] memory p = new uint256[](prices.length);
        uint256[] memory w = new uint256[](prices.length);
        for (uint256 i = 0; i < prices.length; ++i) {
            uint256 value = prices[i] * volumes[i];
            if (value == 0) continue;
            uint256 k = n;
            while (k > 0 && p[k - 1] > prices[i]) {
                p[k] = p[k - 1];
                w[k] = w[k - 1];
                --k;
            }
            p[k] = prices[i];
            w[k] = value;
            total += value;
            ++n;
        }
        uint256 below = 0;
        for (uint256 i = 0; i < n; ++i) {
            below += w[i];
            if (2 * below >= total) return (p[i], prices.length);
        }
        return (0, prices.length);
    }

    /// The qualifying clearings of `cls` still in the ring, oldest first.
    function recentClearings(uint8 cls)
        public
        view
        returns (uint256[] memory prices, uint256[] memory volumes)
    {
        if (cls >= NUM_CLASSES) revert InvalidClass(cls);
        uint256 recorded = clearingsRecorded[cls];
        uint256 n = recorded < REF_WINDOW ? recorded : REF_WINDOW;
        prices = new uint256[](n);
        volumes = new uint256[](n);
        for (uint256 i = 0; i < n; ++i) {
            Clearing storage c = _ring[cls][(recorded - n + i) % REF_WINDOW];
            prices[i] = c.price;
            volumes[i] = c.volume;
        }
    }

    /// Record a qualifying clearing of `cls` (the oldest of a full ring gives way).
    function _recordClearing(uint8 cls, uint256 price, uint256 volume) internal {
        uint256 recorded = clearingsRecorded[cls];
        _ring[cls][recorded % REF_WINDOW] = Clearing(uint128(price), uint128(volume));
        clearingsRecorded[cls] = recorded + 1;
    }
}
