// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {ISettlementModule, LeaseView, State} from "./LeaseTypes.sol";
import {LeaseManager} from "./LeaseManager.sol";
import {ProviderRegistry} from "./ProviderRegistry.sol";

/// @title CumulativeSettlement: pay the latest cumulative total the parties signed.
/// @notice Metered classes settle off-chain state: every unit of work (a compute receipt, a
/// bandwidth voucher) raises a cumulative total in wei, signed as EIP-712 `Usage(leaseId,
/// revision, cumulative)`. With `providerMustSign` both the consumer and the provider (owner
/// or operator) sign each total (compute receipts); without it the consumer's signature is
/// enough (bandwidth vouchers, a unidirectional payment channel). Either side submits the
/// latest state while the lease runs or during its dispute window; a higher revision replaces
/// a lower one and totals never decrease. Entitlement is the latest total; the LeaseManager
/// caps it at the escrow. Two different totals the provider signed for the same revision are
/// a provable fault, reported to the LeaseManager's penalty ladder.
contract CumulativeSettlement is ISettlementModule, EIP712 {
    bytes32 public constant USAGE_TYPEHASH =
        keccak256("Usage(uint256 leaseId,uint64 revision,uint256 cumulative)");

    struct Latest {
        uint64 revision;
        uint192 cumulative;
    }

    error SubmissionClosed(uint256 id, State state);
    error StaleRevision(uint256 id, uint64 latest, uint64 submitted);
    error TotalDecreased(uint256 id, uint256 latest, uint256 submitted);
    error BadSignature(uint256 id, address expected, address recovered);
    error NotConflicting(uint256 id);
    error ConflictAlreadyProven(uint256 id, uint64 revision);
    error TotalTooLarge(uint256 cumulative);

    event UsageSubmitted(uint256 indexed id, uint64 revision, uint256 cumulative, address by);
    event ConflictProven(uint256 indexed id, uint64 revision, bool leaseFailed);

    LeaseManager public immutable leases;
    ProviderRegistry public immutable registry;
    bool public immutable providerMustSign;

    mapping(uint256 id => Latest) public latest;
    mapping(uint256 id => mapping(uint64 revision => bool)) public conflictProven;

    constructor(LeaseManager leases_, ProviderRegistry registry_, bool providerMustSign_)
        EIP712("Nuclux Usage", "1")
    {
        leases = leases_;
        registry = registry_;
        providerMustSign = providerMustSign_;
    }

    function usageDigest(uint256 id, uint64 revision, uint256 cumulative)
        public
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(keccak256(abi.encode(USAGE_TYPEHASH, id, revision, cumulative)));
    }

    /// Record a newer co-signed total for lease `id`.
    function submit(
        uint256 id,
        uint64 revision,
        uint256 cumulative,
        bytes calldata consumerSig,
        bytes calldata providerSig
    ) external {
        if (cumulative > type(uint192).max) revert TotalTooLarge(cumulative);
        Latest memory cur = latest[id];
        if (revision <= cur.revision) revert StaleRevision(id, cur.revision, revision);
        if (cumulative < cur.cumulative) revert TotalDecreased(id, cur.cumulative, cumulative);
        _checkSigned(id, usageDigest(id, revision, cumulative), consumerSig, providerSig);
        latest[id] = Latest(revision, uint192(cumulative));
        emit UsageSubmitted(id, revision, cumulative, msg.sender);
    }

    function _checkSigned(
        uint256 id,
        bytes32 digest,
        bytes calldata consumerSig,
        bytes calldata providerSig
    ) internal view {
        (address consumer, address provider, State s, uint256 deadline) = leases.parties(id);
        bool open = s == State.Active || s == State.ActiveTicketed
            || (s == State.Closing && block.timestamp < deadline);
        if (!open) revert SubmissionClosed(id, s);
        address byConsumer = ECDSA.recover(digest, consumerSig);
        if (byConsumer != consumer) revert BadSignature(id, consumer, byConsumer);
        if (providerMustSign) registry.checkOperator(provider, ECDSA.recover(digest, providerSig));
    }

    /// Prove that the provider signed two different totals for one revision.
    function proveConflict(
        uint256 id,
        uint64 revision,
        uint256 totalA,
        bytes calldata sigA,
        uint256 totalB,
        bytes calldata sigB
    ) external returns (bool failed) {
        if (totalA == totalB) revert NotConflicting(id);
        if (conflictProven[id][revision]) revert ConflictAlreadyProven(id, revision);
        // the lease's state is checked by the LeaseManager when the fault is reported
        (, address provider,,) = leases.parties(id);
        registry.checkOperator(provider, ECDSA.recover(usageDigest(id, revision, totalA), sigA));
        registry.checkOperator(provider, ECDSA.recover(usageDigest(id, revision, totalB), sigB));
        conflictProven[id][revision] = true;
        failed = leases.reportFault(id, "conflicting-usage");
        emit ConflictProven(id, revision, failed);
    }

    function entitlement(uint256 id, LeaseView calldata, uint256) external view returns (uint256) {
        return latest[id].cumulative;
    }
}
