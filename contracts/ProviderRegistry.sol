// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {NUM_CLASSES} from "./LeaseTypes.sol";

/// @title ProviderRegistry: who offers what, at what posted price, backed by what stake.
/// @notice A provider is identified by its owner (cold) key, which stakes NuxCoin, receives
/// earnings and authorises one operator (hot) key for the daemon. The record carries the
/// endpoint, the TLS certificate fingerprint clients pin, the X25519 key, capacities and
/// posted prices per resource class. Leaving starts unbonding, which ends at
/// max(start + unbondingDelay, end of the last lease + dispute window). The LeaseManager is
/// the only contract that records lease ends and faults; faults climb a ladder: warnings,
/// then suspension from new leases, then capped slashing paid to the harmed consumer.
contract ProviderRegistry is Ownable {
    using SafeERC20 for IERC20;

    enum Status {
        None,
        Active,
        Paused,
        Leaving
    }

    struct Provider {
        address operator;
        Status status;
        uint8 faults;
        uint40 suspendedUntil;
        uint40 unbondStarted;
        uint128 stake;
        uint40 releaseAt; // end of the last lease plus its dispute window
        bytes32 certFingerprint;
        bytes32 x25519Key;
        uint64[NUM_CLASSES] capacity;
        uint128[NUM_CLASSES] price;
        string endpoint;
    }

    /// Why a provider cannot take a lease (argument of ProviderNotServing).
    uint8 public constant NOT_REGISTERED = 0;
    uint8 public constant PAUSED = 1;
    uint8 public constant LEAVING = 2;
    uint8 public constant SUSPENDED = 3;
    uint8 public constant NO_CAPACITY = 4;
    uint8 public constant LOW_STAKE = 5;

    uint256 public constant MAX_ENDPOINT_BYTES = 256;

    error ZeroAddress();
    error AlreadyRegistered(address provider);
    error NotRegistered(address provider);
    error OperatorInUse(address operator);
    error StakeTooLow(uint256 stake, uint256 minimum);
    error NotOwnerOrOperator(address provider, address sender);
    error ProviderNotServing(address provider, uint8 reason);
    error InvalidClass(uint8 cls);
    error BadEndpoint();
    error NotLeaving(address provider);
    error AlreadyLeaving(address provider);
    error StillBonded(address provider, uint256 until);
    error OnlyLeaseManager(address sender);
    error LeaseManagerAlreadySet();

    event ProviderRegistered(
        address indexed provider, address indexed operator, uint256 stake, string endpoint
    );
    event ProviderUpdated(address indexed provider, string endpoint, bytes32 certFingerprint);
    event OperatorChanged(address indexed provider, address indexed operator);
    event StakeAdded(address indexed provider, uint256 amount, uint256 stake);
    event ProviderPaused(address indexed provider, bool paused);
    event ProviderLeaving(address indexed provider, uint256 unbondEnd);
    event ProviderWithdrawn(address indexed provider, uint256 stake);
    event FaultRecorded(address indexed provider, uint8 faults, uint256 suspendedUntil);
    event Slashed(address indexed provider, address indexed victim, uint256 amount);

    IERC20 public immutable token;
    uint256 public immutable minStake;
    uint256 public immutable unbondingDelay;
    uint8 public immutable suspendAfter;
    uint8 public immutable slashAfter;
    uint256 public immutable suspensionPeriod;
    uint256 public immutable slashCap;
    address public leaseManager;

    mapping(address provider => Provider) internal _providers;
    mapping(address operator => address provider) public providerOfOperator;
    /// Faults survive leaving and re-registering.
    mapping(address provider => uint8) public faultHistory;
    mapping(address provider => bool) internal _listed;
    address[] internal _everRegistered;

    constructor(
        IERC20 token_,
        uint256 minStake_,
        uint256 unbondingDelay_,
        uint8 suspendAfter_,
        uint8 slashAfter_,
        uint256 suspensionPeriod_,
        uint256 slashCap_
    ) Ownable(msg.sender) {
        token = token_;
        minStake = minStake_;
        unbondingDelay = unbondingDelay_;
        suspendAfter = suspendAfter_;
        slashAfter = slashAfter_;
        suspensionPeriod = suspensionPeriod_;
        slashCap = slashCap_;
    }

    /// Bind the LeaseManager once; ownership is then renounced so nobody can rebind it.
    function setLeaseManager(address lm) external onlyOwner {
        if (lm == address(0)) revert ZeroAddress();
        if (leaseManager != address(0)) revert LeaseManagerAlreadySet();
        leaseManager = lm;
        renounceOwnership();
    }

    modifier onlyLeaseManager() {
        if (msg.sender != leaseManager) revert OnlyLeaseManager(msg.sender);
        _;
    }

    // ----------------------------------------------------------------- provider actions

    function register(
        address operator,
        uint256 stake,
        string calldata endpoint,
        bytes32 certFingerprint,
        bytes32 x25519Key,
        uint64[NUM_CLASSES] calldata capacity,
        uint128[NUM_CLASSES] calldata price
    ) external {
        Provider storage p = _providers[msg.sender];
        if (p.status != Status.None) revert AlreadyRegistered(msg.sender);
        if (stake < minStake) revert StakeTooLow(stake, minStake);
        address boundTo = providerOfOperator[msg.sender];
        if (boundTo != address(0) && boundTo != msg.sender) revert OperatorInUse(msg.sender);
        _checkEndpoint(endpoint);
        _bindOperator(msg.sender, operator);
        p.status = Status.Active;
        p.stake = SafeCast.toUint128(stake);
        p.faults = faultHistory[msg.sender];
        p.certFingerprint = certFingerprint;
        p.x25519Key = x25519Key;
        p.capacity = capacity;
        p.price = price;
        p.endpoint = endpoint;
        if (!_listed[msg.sender]) {
            _listed[msg.sender] = true;
            _everRegistered.push(msg.sender);
        }
        emit ProviderRegistered(msg.sender, operator, stake, endpoint);
        token.safeTransferFrom(msg.sender, address(this), stake);
    }

    function update(
        address provider,
        string calldata endpoint,
        bytes32 certFingerprint,
        bytes32 x25519Key,
        uint64[NUM_CLASSES] calldata capacity,
        uint128[NUM_CLASSES] calldata price
    ) external {
        Provider storage p = _ownerOrOperator(provider);
        _checkEndpoint(endpoint);
        p.certFingerprint = certFingerprint;
        p.x25519Key = x25519Key;
        p.capacity = capacity;
        p.price = price;
        p.endpoint = endpoint;
        emit ProviderUpdated(provider, endpoint, certFingerprint);
    }

    function setOperator(address operator) external {
        Provider storage p = _registered(msg.sender);
        delete providerOfOperator[p.operator];
        _bindOperator(msg.sender, operator);
    }

    function addStake(uint256 amount) external {
        Provider storage p = _registered(msg.sender);
        p.stake = SafeCast.toUint128(uint256(p.stake) + amount);
        emit StakeAdded(msg.sender, amount, p.stake);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    /// Stop (or resume) taking new leases; existing leases are unaffected.
    function setPaused(address provider, bool paused) external {
        Provider storage p = _ownerOrOperator(provider);
        if (p.status == Status.Leaving) revert AlreadyLeaving(provider);
        p.status = paused ? Status.Paused : Status.Active;
        emit ProviderPaused(provider, paused);
    }

    function leave() external {
        Provider storage p = _registered(msg.sender);
        if (p.status == Status.Leaving) revert AlreadyLeaving(msg.sender);
        p.status = Status.Leaving;
        p.unbondStarted = uint40(block.timestamp);
        emit ProviderLeaving(msg.sender, unbondEnd(msg.sender));
    }

    function withdraw() external {
        Provider storage p = _registered(msg.sender);
        if (p.status != Status.Leaving) revert NotLeaving(msg.sender);
        uint256 until = unbondEnd(msg.sender);
        if (block.timestamp < until) revert StillBonded(msg.sender, until);
        uint256 stake = p.stake;
        delete providerOfOperator[p.operator];
        delete _providers[msg.sender];
        emit ProviderWithdrawn(msg.sender, stake);
        token.safeTransfer(msg.sender, stake);
    }

    // ----------------------------------------------------------------- lease manager hooks

    /// The posted price of `provider` for `cls`; reverts unless it takes new leases of it.
    function quote(address provider, uint8 cls) external view returns (uint256) {
        if (cls >= NUM_CLASSES) revert InvalidClass(cls);
        Provider storage p = _providers[provider];
        if (p.status != Status.Active) {
            uint8 reason = p.status == Status.None
                ? NOT_REGISTERED
                : (p.status == Status.Paused ? PAUSED : LEAVING);
            revert ProviderNotServing(provider, reason);
        }
        if (block.timestamp < p.suspendedUntil) revert ProviderNotServing(provider, SUSPENDED);
        if (p.capacity[cls] == 0) revert ProviderNotServing(provider, NO_CAPACITY);
        if (p.stake < minStake) revert ProviderNotServing(provider, LOW_STAKE);
        return p.price[cls];
    }

    /// Reverts unless `sender` is the provider's owner or operator.
    function checkOperator(address provider, address sender) external view {
        Provider storage p = _providers[provider];
        if (p.status == Status.None) revert NotRegistered(provider);
        if (sender != provider && sender != p.operator) {
            revert NotOwnerOrOperator(provider, sender);
        }
    }

    /// A lease of `provider` now runs until `releaseAt` (its end plus the dispute window).
    function noteLeaseRelease(address provider, uint256 releaseAt) external onlyLeaseManager {
        Provider storage p = _providers[provider];
        if (releaseAt > p.releaseAt) p.releaseAt = uint40(releaseAt);
    }

    /// Record an on-chain-provable fault; returns the amount slashed to `victim`.
    /// Only `slashable` faults (proven by a module) can cost stake; others (a missed
    /// acceptance) count towards warnings and suspension only.
    function recordFault(address provider, address victim, bool slashable)
        external
        onlyLeaseManager
        returns (uint256 slashed)
    {
        Provider storage p = _providers[provider];
        if (p.status == Status.None) return 0;
        uint8 faults = p.faults < type(uint8).max ? p.faults + 1 : p.faults;
        p.faults = faults;
        faultHistory[provider] = faults;
        if (faults >= suspendAfter) {
            p.suspendedUntil = uint40(block.timestamp + suspensionPeriod);
        }
        emit FaultRecorded(provider, faults, p.suspendedUntil);
        if (slashable && faults >= slashAfter) {
            slashed = p.stake < slashCap ? p.stake : slashCap;
            if (slashed > 0) {
                p.stake -= uint128(slashed);
                emit Slashed(provider, victim, slashed);
                token.safeTransfer(victim, slashed);
            }
        }
    }

    // ----------------------------------------------------------------- views

    function getProvider(address provider) external view returns (Provider memory) {
        return _providers[provider];
    }

    function unbondEnd(address provider) public view returns (uint256) {
        Provider storage p = _providers[provider];
        uint256 byDelay = uint256(p.unbondStarted) + unbondingDelay;
        return byDelay > p.releaseAt ? byDelay : p.releaseAt;
    }

    function providerCount() external view returns (uint256) {
        return _everRegistered.length;
    }

    /// Providers ever registered, paged; check status with getProvider.
    function providersPage(uint256 start, uint256 count) external view returns (address[] memory out) {
        uint256 n = _everRegistered.length;
        if (start >= n) return new address[](0);
        uint256 end = start + count > n ? n : start + count;
        out = new address[](end - start);
        for (uint256 i = start; i < end; ++i) out[i - start] = _everRegistered[i];
    }

    // ----------------------------------------------------------------- internals

    function _registered(address provider) internal view returns (Provider storage p) {
        p = _providers[provider];
        if (p.status == Status.None) revert NotRegistered(provider);
    }

    function _ownerOrOperator(address provider) internal view returns (Provider storage p) {
        p = _registered(provider);
        if (msg.sender != provider && msg.sender != p.operator) {
            revert NotOwnerOrOperator(provider, msg.sender);
        }
    }

    function _bindOperator(address provider, address operator) internal {
        if (operator == address(0)) revert ZeroAddress();
        address holder = providerOfOperator[operator];
        if (holder != address(0) && holder != provider) revert OperatorInUse(operator);
        if (operator != provider && _providers[operator].status != Status.None) {
            revert OperatorInUse(operator);
        }
        providerOfOperator[operator] = provider;
        _providers[provider].operator = operator;
        emit OperatorChanged(provider, operator);
    }

    function _checkEndpoint(string calldata endpoint) internal pure {
        uint256 n = bytes(endpoint).length;
        if (n == 0 || n > MAX_ENDPOINT_BYTES) revert BadEndpoint();
    }
}
