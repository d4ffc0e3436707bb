// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {ISettlementModule, LeaseView, NUM_CLASSES, State} from "./LeaseTypes.sol";
import {ProviderRegistry} from "./ProviderRegistry.sol";

/// @title LeaseManager: NuxCoin escrow and the lease state machine.
/// @notice One lease type for every resource class. A consumer opens a lease on a provider at
/// the provider's posted price, locking escrow (Ticketed); the provider accepts before a
/// deadline (Active) or the lease closes with a full refund. An extension is a new term the
/// provider must accept (ActiveTicketed); a top-up adds escrow only. Cancel or the end of the
/// term enters Closing, a dispute window in which modules take the parties' latest co-signed
/// state; then anyone may settle: the provider gets min(escrow, entitlement) less what it
/// already claimed, the consumer the rest, to the wei. Entitlement comes from the class's
/// settlement module, fixed per class when this contract is deployed. Modules report provable faults; enough of
/// them fail the lease and slash the provider's stake to the consumer. The auction house, set
/// once before ownership is renounced, opens the winners' leases of an auction for the
/// consumer at the price it cleared (`openLeaseFor`); when such a ticket is declined or expires
/// the provider takes the missed-acceptance fault and the escrow goes back to the auction house
/// (`IAuctionTickets.ticketFailed`), which re-lets it to the next bidder. Transitions follow the
/// table in `nuclux.core.lease`; everything else reverts with a custom error.
/// The auction house takes back the escrow of a ticket it opened that failed (declined or
/// expired), to give the lease to the next bidder or refund the consumer.
interface IAuctionTickets {
    function ticketFailed(uint256 leaseId, address consumer, uint256 refund) external;
    function requestOfLease(uint256 leaseId) external view returns (uint256);
}

contract LeaseManager is Ownable {
    using SafeERC20 for IERC20;

    struct Lease {
        // slot 0
        address consumer;
        uint8 cls;
        State state;
        uint8 faults;
        uint32 startEpoch;
        uint32 endEpoch;
        // slot 1
        address provider;
        uint40 deadline; // acceptance deadline (Ticketed) or end of the dispute window (Closing)
        uint32 extEpochs;
        // slot 2
        uint128 escrow;
        uint128 paid;
        // slot 3
        uint128 price;
        uint64 units;
        uint32 termEpochs;
        // slot 4: a pending extension
        uint128 extEscrow;
        uint40 extDeadline;
    }

    error UnknownLease(uint256 id);
    error BadState(uint256 id, State state);
    error NotConsumer(uint256 id, address sender);
    error NotModule(uint256 id, address sender);
    error InvalidClass(uint8 cls);
    error ModuleNotSet(uint8 cls);
    error ZeroAmount();
    error ZeroUnits();
    error ZeroTerm();
    error PriceAboveMax(uint256 price, uint256 maxPrice);
    error DeadlinePassed(uint256 id, uint256 deadline);
    error DeadlineNotPassed(uint256 id, uint256 deadline);
    error TermNotEnded(uint256 id, uint256 endEpoch);
    error TermEnded(uint256 id, uint256 endEpoch);
    error DisputeWindowOpen(uint256 id, uint256 until);
    error NothingToClaim(uint256 id);
    error NotAuctionHouse(address sender);
    error AuctionHouseAlreadySet();

    event LeaseOpened(
        uint256 indexed id,
        address indexed consumer,
        address indexed provider,
        uint8 cls,
        uint256 units,
        uint256 price,
        uint256 termEpochs,
        uint256 escrow,
        uint256 deadline
    );
    event LeaseAccepted(uint256 indexed id, uint256 startEpoch, uint256 endEpoch);
    event LeaseDeclined(uint256 indexed id, uint256 refund);
    event TicketExpired(uint256 indexed id, uint256 refund);
    event ExtensionRequested(uint256 indexed id, uint256 epochs, uint256 escrow, uint256 deadline);
    event ExtensionAccepted(uint256 indexed id, uint256 endEpoch, uint256 escrow);
    event ExtensionRefunded(uint256 indexed id, uint256 refund);
    event ToppedUp(uint256 indexed id, uint256 amount, uint256 escrow);
    event Claimed(uint256 indexed id, uint256 amount, uint256 paid);
    event LeaseClosing(uint256 indexed id, uint256 endEpoch, uint256 disputeEnds);
    event LeaseSettled(uint256 indexed id, uint256 toProvider, uint256 refund);
    event FaultReported(uint256 indexed id, uint8 faults, bytes32 reason);
    event LeaseFailed(uint256 indexed id, uint256 toProvider, uint256 refund, uint256 slashed);
    event ModuleSet(uint8 indexed cls, address module);
    event AuctionHouseSet(address auctionHouse);

    IERC20 public immutable token;
    // Each class's settlement module, fixed at deployment: as immutables they cost a claim or
    // a settlement no storage read. `deploy` creates the modules first, bound to this
    // contract's predicted address.
    address internal immutable _storageModule;
    address internal immutable _computeModule;
    address internal immutable _bandwidthModule;
    ProviderRegistry public immutable registry;
    uint256 public immutable epochLength;
    uint256 public immutable acceptWindow;
    uint256 public immutable disputeWindow;
    uint8 public immutable failThreshold;

    uint256 public leaseCount;
    mapping(uint256 id => Lease) internal _leases;
    /// When a missed acceptance last counted as a fault of each provider: at most one per
    /// accept window, so a flood of tickets cannot pile up faults.
    mapping(address provider => uint256) public lastMissFault;
    /// The one contract that may open leases for consumers at a price it cleared.
    address public auctionHouse;

    constructor(
        IERC20 token_,
        ProviderRegistry registry_,
        uint256 epochLength_,
        uint256 acceptWindow_,
        uint256 disputeWindow_,
        uint8 failThreshold_,
        address[NUM_CLASSES] memory modules_
    ) Ownable(msg.sender) {
        for (uint8 cls = 0; cls < NUM_CLASSES; ++cls) {
            if (modules_[cls] == address(0)) revert ModuleNotSet(cls);
            emit ModuleSet(cls, modules_[cls]);
        }
        _storageModule = modules_[0];
        _computeModule = modules_[1];
        _bandwidthModule = modules_[2];
        token = token_;
        registry = registry_;
        epochLength = epochLength_;
        acceptWindow = acceptWindow_;
        disputeWindow = disputeWindow_;
        failThreshold = failThreshold_;
    }

    /// The settlement module of class `cls` (fixed at deployment).
    function modules(uint256 cls) public view returns (address) {
        if (cls == 0) return _storageModule;
        if (cls == 1) return _computeModule;
        if (cls == 2) return _bandwidthModule;
        revert InvalidClass(uint8(cls < 255 ? cls : 255));
    }

    /// Authorise the auction house, once (before ownership is renounced).
    function setAuctionHouse(address house) external onlyOwner {
        if (auctionHouse != address(0)) revert AuctionHouseAlreadySet();
        auctionHouse = house;
        emit AuctionHouseSet(house);
    }

    function epoch() public view returns (uint256) {
        return block.timestamp / epochLength;
    }

    // ----------------------------------------------------------------- consumer side

    /// Open a lease on `provider` at its posted price (at most `maxPrice`), locking `escrow`.
    function openLease(
        address provider,
        uint8 cls,
        uint64 units,
        uint32 termEpochs,
        uint256 maxPrice,
        uint256 escrow
    ) external returns (uint256 id) {
        _checkTerms(cls, units, termEpochs, escrow);
        uint256 price = registry.quote(provider, cls);
        if (price > maxPrice) revert PriceAboveMax(price, maxPrice);
        return _open(msg.sender, provider, cls, units, termEpochs, price, escrow);
    }

    /// The auction house opens a winner's lease for `consumer` at the clearing `price`,
    /// paying `escrow` from what the consumer locked with it.
    function openLeaseFor(
        address consumer,
        address provider,
        uint8 cls,
        uint64 units,
        uint32 termEpochs,
        uint256 price,
        uint256 escrow
    ) external returns (uint256) {
        if (msg.sender != auctionHouse) revert NotAuctionHouse(msg.sender);
        _checkTerms(cls, units, termEpochs, escrow);
        return _open(consumer, provider, cls, units, termEpochs, price, escrow);
    }

    /// Withdraw a lease the provider has not accepted yet: full refund.
    function cancel(uint256 id) external {
        Lease storage l = _lease(id);
        if (msg.sender != l.consumer) revert NotConsumer(id, msg.sender);
        State s = l.state;
        if (s == State.Ticketed) {
            uint256 refund = l.escrow;
            l.state = State.Closed;
            l.escrow = 0;
            emit LeaseSettled(id, 0, refund);
            token.safeTransfer(l.consumer, refund);
            return;
        }
        if (s != State.Active && s != State.ActiveTicketed) revert BadState(id, s);
        uint256 cut = epoch() + 1;
        if (cut < l.endEpoch) l.endEpoch = uint32(cut);
        _enterClosing(id, l);
    }

    /// Buy a further `epochs` of term with `addEscrow`; the provider must accept it.
    function extend(uint256 id, uint32 epochs, uint256 addEscrow) external {
        Lease storage l = _lease(id);
        if (msg.sender != l.consumer) revert NotConsumer(id, msg.sender);
        if (l.state != State.Active) revert BadState(id, l.state);
        if (epochs == 0) revert ZeroTerm();
        if (epoch() >= l.endEpoch) revert TermEnded(id, l.endEpoch);
        uint256 deadline = block.timestamp + acceptWindow;
        l.state = State.ActiveTicketed;
        l.extEpochs = epochs;
        l.extEscrow = SafeCast.toUint128(addEscrow);
        l.extDeadline = uint40(deadline);
        emit ExtensionRequested(id, epochs, addEscrow, deadline);
        if (addEscrow > 0) token.safeTransferFrom(msg.sender, address(this), addEscrow);
    }

    /// Add escrow to a running lease; no acceptance needed. Anyone may pay.
    function topUp(uint256 id, uint256 amount) external {
        Lease storage l = _lease(id);
        if (l.state != State.Active && l.state != State.ActiveTicketed) revert BadState(id, l.state);
        if (amount == 0) revert ZeroAmount();
        l.escrow = SafeCast.toUint128(uint256(l.escrow) + amount);
        emit ToppedUp(id, amount, l.escrow);
        token.safeTransferFrom(msg.sender, address(this), amount);
    }

    // ----------------------------------------------------------------- provider side

    function accept(uint256 id) external {
        Lease storage l = _lease(id);
        if (l.state != State.Ticketed) revert BadState(id, l.state);
        registry.checkOperator(l.provider, msg.sender);
        if (block.timestamp > l.deadline) revert DeadlinePassed(id, l.deadline);
        uint256 start = epoch();
        uint256 end = start + l.termEpochs;
        l.state = State.Active;
        l.startEpoch = uint32(start);
        l.endEpoch = uint32(end);
        l.deadline = 0;
        emit LeaseAccepted(id, start, end);
        registry.noteLeaseRelease(l.provider, end * epochLength + disputeWindow);
    }

    function decline(uint256 id) external {
        Lease storage l = _lease(id);
        if (l.state != State.Ticketed) revert BadState(id, l.state);
        registry.checkOperator(l.provider, msg.sender);
        uint256 refund = l.escrow;
        l.state = State.Closed;
        l.escrow = 0;
        emit LeaseDeclined(id, refund);
        bool auctioned = fromAuction(id);
        if (auctioned) _missFault(l); // a winner that will not serve is penalised
        _refundTicket(id, l, refund, auctioned);
    }

    function acceptExtension(uint256 id) external {
        Lease storage l = _lease(id);
        if (l.state != State.ActiveTicketed) revert BadState(id, l.state);
        registry.checkOperator(l.provider, msg.sender);
        if (block.timestamp > l.extDeadline) revert DeadlinePassed(id, l.extDeadline);
        if (epoch() >= l.endEpoch) revert TermEnded(id, l.endEpoch);
        uint256 end = uint256(l.endEpoch) + l.extEpochs;
        l.state = State.Active;
        l.endEpoch = uint32(end);
        l.escrow += l.extEscrow;
        _clearExtension(l);
        emit ExtensionAccepted(id, end, l.escrow);
        registry.noteLeaseRelease(l.provider, end * epochLength + disputeWindow);
    }

    function declineExtension(uint256 id) external {
        Lease storage l = _lease(id);
        if (l.state != State.ActiveTicketed) revert BadState(id, l.state);
        registry.checkOperator(l.provider, msg.sender);
        l.state = State.Active;
        _refundExtension(id, l);
    }

    /// Pay the provider what it has earned so far (capped by escrow). Anyone may trigger it
    /// (a keeper, the operator): the money can only go to the provider's owner (cold) address
    /// and entitlement does not depend on when it is claimed.
    function claim(uint256 id) external returns (uint256 amount) {
        Lease storage l = _lease(id);
        State s = l.state;
        if (s != State.Active && s != State.ActiveTicketed && s != State.Closing) {
            revert BadState(id, s);
        }
        uint256 due = _due(id, l);
        amount = due - l.paid;
        if (amount == 0) revert NothingToClaim(id);
        l.paid = uint128(due);
        emit Claimed(id, amount, due);
        token.safeTransfer(l.provider, amount);
    }

    // ----------------------------------------------------------------- anyone

    /// A ticket nobody accepted in time: full refund, and a missed acceptance is a fault.
    function expireTicket(uint256 id) external {
        Lease storage l = _lease(id);
        if (l.state != State.Ticketed) revert BadState(id, l.state);
        if (block.timestamp <= l.deadline) revert DeadlineNotPassed(id, l.deadline);
        uint256 refund = l.escrow;
        l.state = State.Closed;
        l.escrow = 0;
        emit TicketExpired(id, refund);
        _missFault(l);
        _refundTicket(id, l, refund, fromAuction(id));
    }

    /// Whether the auction house opened lease `id` (its failed ticket then goes back to it).
    function fromAuction(uint256 id) public view returns (bool) {
        return auctionHouse != address(0) && IAuctionTickets(auctionHouse).requestOfLease(id) != 0;
    }

    /// A missed acceptance counts as a fault, at most once per accept window per provider.
    function _missFault(Lease storage l) internal {
        if (block.timestamp >= lastMissFault[l.provider] + acceptWindow) {
            lastMissFault[l.provider] = block.timestamp;
            registry.recordFault(l.provider, l.consumer, false);
        }
    }

    /// A failed ticket's escrow: to the consumer, or, for an auction's lease, back to the
    /// auction house, which re-lets it to the next bidder or refunds the consumer.
    function _refundTicket(uint256 id, Lease storage l, uint256 refund, bool auctioned)
        internal
    {
        if (!auctioned) {
            token.safeTransfer(l.consumer, refund);
            return;
        }
        token.safeTransfer(auctionHouse, refund);
        IAuctionTickets(auctionHouse).ticketFailed(id, l.consumer, refund);
    }

    function expireExtension(uint256 id) external {
        Lease storage l = _lease(id);
        if (l.state != State.ActiveTicketed) revert BadState(id, l.state);
        if (block.timestamp <= l.extDeadline) revert DeadlineNotPassed(id, l.extDeadline);
        l.state = State.Active;
        _refundExtension(id, l);
    }

    /// The term is over: enter the dispute window.
    function endTerm(uint256 id) external {
        Lease storage l = _lease(id);
        if (l.state != State.Active && l.state != State.ActiveTicketed) revert BadState(id, l.state);
        if (epoch() < l.endEpoch) revert TermNotEnded(id, l.endEpoch);
        _enterClosing(id, l);
    }

    /// After the dispute window: pay the provider what is due and refund the rest.
    function settle(uint256 id) external {
        Lease storage l = _lease(id);
        if (l.state != State.Closing) revert BadState(id, l.state);
        if (block.timestamp < l.deadline) revert DisputeWindowOpen(id, l.deadline);
        uint256 due = _due(id, l);
        uint256 toProvider = due - l.paid;
        uint256 refund = l.escrow - due;
        l.state = State.Closed;
        l.paid = uint128(due);
        l.escrow = uint128(due);
        emit LeaseSettled(id, toProvider, refund);
        if (toProvider > 0) token.safeTransfer(l.provider, toProvider);
        if (refund > 0) token.safeTransfer(l.consumer, refund);
    }

    // ----------------------------------------------------------------- modules

    /// The class's module reports an on-chain-provable fault of the provider on lease `id`.
    /// Returns true if the lease failed (and was settled with a penalty).
    function reportFault(uint256 id, bytes32 reason) external returns (bool failed) {
        Lease storage l = _lease(id);
        if (msg.sender != modules(l.cls)) revert NotModule(id, msg.sender);
        State s = l.state;
        if (s != State.Active && s != State.ActiveTicketed && s != State.Closing) {
            revert BadState(id, s);
        }
        uint8 faults = l.faults + 1;
        l.faults = faults;
        emit FaultReported(id, faults, reason);
        if (faults < failThreshold) {
            registry.recordFault(l.provider, l.consumer, true);
            return false;
        }
        if (s == State.ActiveTicketed) _refundExtension(id, l);
        uint256 due = _due(id, l);
        uint256 toProvider = due - l.paid;
        uint256 refund = l.escrow - due;
        l.state = State.Failed;
        l.paid = uint128(due);
        l.escrow = uint128(due);
        if (toProvider > 0) token.safeTransfer(l.provider, toProvider);
        if (refund > 0) token.safeTransfer(l.consumer, refund);
        uint256 slashed = registry.recordFault(l.provider, l.consumer, true);
        emit LeaseFailed(id, toProvider, refund, slashed);
        return true;
    }

    // ----------------------------------------------------------------- views

    function getLease(uint256 id) external view returns (Lease memory) {
        return _leases[id];
    }

    /// The parties, state and deadline of a lease: what a module checks before taking a
    /// submission (in Closing, `deadline` is the end of the dispute window).
    function parties(uint256 id)
        external
        view
        returns (address consumer, address provider, State state, uint256 deadline)
    {
        Lease storage l = _leases[id];
        return (l.consumer, l.provider, l.state, l.deadline);
    }

    /// What a settlement module checks of a lease: its parties, state, deadline and term.
    function terms(uint256 id)
        external
        view
        returns (
            address consumer,
            address provider,
            State state,
            uint256 deadline,
            uint256 startEpoch,
            uint256 endEpoch
        )
    {
        Lease storage l = _leases[id];
        return (l.consumer, l.provider, l.state, l.deadline, l.startEpoch, l.endEpoch);
    }

    /// What the provider could claim now, and its total entitlement capped by escrow.
    function claimable(uint256 id) external view returns (uint256 now_, uint256 due) {
        Lease storage l = _lease(id);
        State s = l.state;
        if (s != State.Active && s != State.ActiveTicketed && s != State.Closing) return (0, l.paid);
        due = _due(id, l);
        now_ = due - l.paid;
    }

    // ----------------------------------------------------------------- internals

    function _checkTerms(uint8 cls, uint64 units, uint32 termEpochs, uint256 escrow)
        internal
        pure
    {
        if (cls >= NUM_CLASSES) revert InvalidClass(cls);
        if (units == 0) revert ZeroUnits();
        if (termEpochs == 0) revert ZeroTerm();
        if (escrow == 0) revert ZeroAmount();
    }

    /// A new Ticketed lease; `escrow` comes from the sender (the consumer or the auction).
    function _open(
        address consumer,
        address provider,
        uint8 cls,
        uint64 units,
        uint32 termEpochs,
        uint256 price,
        uint256 escrow
    ) internal returns (uint256 id) {
        id = ++leaseCount;
        uint256 deadline = block.timestamp + acceptWindow;
        _leases[id] = Lease({
            consumer: consumer,
            cls: cls,
            state: State.Ticketed,
            faults: 0,
            startEpoch: 0,
            endEpoch: 0,
            provider: provider,
            deadline: uint40(deadline),
            extEpochs: 0,
            escrow: SafeCast.toUint128(escrow),
            paid: 0,
            price: SafeCast.toUint128(price),
            units: units,
            termEpochs: termEpochs,
            extEscrow: 0,
            extDeadline: 0
        });
        emit LeaseOpened(id, consumer, provider, cls, units, price, termEpochs, escrow, deadline);
        token.safeTransferFrom(msg.sender, address(this), escrow);
    }

    function _lease(uint256 id) internal view returns (Lease storage l) {
        l = _leases[id];
        if (l.state == State.None) revert UnknownLease(id);
    }

    /// min(escrow, entitlement), never below what was already paid.
    function _due(uint256 id, Lease storage l) internal view returns (uint256) {
        LeaseView memory v = LeaseView({
            units: l.units,
            price: l.price,
            startEpoch: l.startEpoch,
            endEpoch: l.endEpoch
        });
        uint256 ent = ISettlementModule(modules(l.cls)).entitlement(id, v, epoch());
        uint256 due = ent < l.escrow ? ent : l.escrow;
        return due < l.paid ? l.paid : due;
    }

    function _enterClosing(uint256 id, Lease storage l) internal {
        if (l.state == State.ActiveTicketed) _refundExtension(id, l);
        uint256 until = block.timestamp + disputeWindow;
        l.state = State.Closing;
        l.deadline = uint40(until);
        emit LeaseClosing(id, l.endEpoch, until);
        registry.noteLeaseRelease(l.provider, until);
    }

    function _clearExtension(Lease storage l) internal {
        l.extEpochs = 0;
        l.extEscrow = 0;
        l.extDeadline = 0;
    }

    function _refundExtension(uint256 id, Lease storage l) internal {
        uint256 refund = l.extEscrow;
        _clearExtension(l);
        emit ExtensionRefunded(id, refund);
        if (refund > 0) token.safeTransfer(l.consumer, refund);
    }
}
