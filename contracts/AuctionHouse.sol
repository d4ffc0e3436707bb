// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {NUM_CLASSES} from "./LeaseTypes.sol";
import {ProviderRegistry} from "./ProviderRegistry.sol";
import {ReferencePrice} from "./ReferencePrice.sol";

/// What the auction needs of the LeaseManager: opening a Ticketed lease for a consumer (the
/// LeaseManager calls `ticketFailed` back when such a ticket is declined or expires).
interface ILeaseOpener {
    function openLeaseFor(
        address consumer,
        address provider,
        uint8 cls,
        uint64 units,
        uint32 termEpochs,
        uint256 price,
        uint256 escrow
    ) external returns (uint256 id);
}

/// @title AuctionHouse: truthful sealed-bid auctions for new leases.
/// @notice A consumer posts a request (class, units per provider, term, m providers wanted,
/// at least mMin, a reserve price per unit) and locks m x units x term x reserve. During the
/// commit window registered providers that serve the class commit
/// keccak256("nuclux/bid/v1" || price || salt || provider || requestId) with a bid deposit;
/// during the reveal window they open it (the deposit comes back). Each window lasts at least
/// its seconds and at least its blocks (deploy parameters; either may be 0): it is open while
/// chain time has not passed its end time or the block number its end block, so a window
/// counted in blocks holds that many blocks however block times jitter, and one counted in
/// seconds lasts on a chain that mines only when asked. After the reveal window, or as soon
/// as the commit window is closed and every committed bid is revealed (nothing can change
/// the outcome any more), anyone finalises: fewer than mMin revealed bids refund everything;
/// otherwise the
/// min(m, revealed) lowest bids win (ties by keccak256("nuclux/bid-tie/v1" || seed ||
/// provider), the seed being the hash of a block fixed by the first reveal: its own block or
/// `seedDelay` blocks after, unknown to every bidder when it committed) and each winner's
/// lease opens Ticketed in the LeaseManager at one uniform price: the (m+1)-th lowest
/// revealed bid, or the reserve. The rule is `nuclux.core.auction.clear`. Deposits of bids
/// never revealed go to the consumer; unspent escrow is refunded. Bids per request are capped
/// at `maxBids`, so finalising is bounded.
///
/// A request may name up to MAX_EXCLUDED providers that may not bid on it (a storage file's
/// replacement excludes the providers already holding its shares), fixed when it is posted,
/// before any bid exists. Such a *restricted* auction never counts for the reference price:
/// a party could otherwise exclude every honest provider and let its own staked bidders set
/// the price. `postWithPermit` takes an EIP-2612 permit of the escrow signed by the consumer,
/// so a request needs no approval transaction before it.
///
/// A winner that declines its ticket or lets it expire takes the missed-acceptance fault in
/// the LeaseManager, which hands the ticket's escrow back here (`ticketFailed`): the next
/// revealed bid in rank order that did not win (up to m of them are kept at finalising) gets
/// a Ticketed lease at the same clearing price with that escrow; when none is left or can
/// serve, the escrow goes to the consumer. Nothing stays in the house.
///
/// Cleared auctions with at least REF_MIN_BIDDERS revealed bids (every bidder was a staked,
/// registered provider when it bid) and no excluded providers count for the reference price
/// (`ReferencePrice`).
contract AuctionHouse is ReferencePrice {
    using SafeERC20 for IERC20;

    enum Status {
        None,
        Open,
        Cleared,
        Failed
    }

    struct Request {
        // slot 0
        address consumer;
        uint8 cls;
        uint8 m;
        uint8 mMin;
        Status status;
        uint16 commits;
        uint16 reveals;
        // slot 1
        uint64 units;
        uint32 term;
        // commits while block.timestamp <= commitEnd or block.number <= commitEndBlock;
        // then reveals while block.timestamp <= revealEnd or
        // block.number <= commitEndBlock + revealBlocks
        uint40 commitEnd;
        uint40 revealEnd;
        uint40 seedBlock;
        uint40 commitEndBlock;
        // slot 2
        uint128 reserve;
        uint128 escrow;
        // slot 3
        uint128 price; // the clearing price once cleared
        uint8 winners;
        uint8 replacements; // runners-up given a lease after a winner failed to accept
        uint8 excluded; // providers the request excludes from bidding
    }

    /// What a consumer asks for: m providers (at least mMin) of `units` each over `term`
    /// epochs at no more than `reserve` per unit, locking `escrow`.
    struct Terms {
        uint8 cls;
        uint64 units;
        uint32 term;
        uint8 m;
        uint8 mMin;
        uint128 reserve;
        uint256 escrow;
    }

    struct Bid {
        bytes32 commitment;
        address depositor;
        uint128 price;
        bool revealed;
    }

    uint256 public constant MAX_PROVIDERS = 64;
    uint256 public constant MAX_WINDOW = 2 ** 32; // seconds or blocks
    uint256 public constant MAX_EXCLUDED = 64;
    bytes32 internal constant NO_SEED = bytes32(0);

    error InvalidConfig();
    error ZeroTerms(uint256 units, uint256 term, uint256 reserve);
    error BadProviderCount(uint256 m, uint256 mMin);
    error InsufficientEscrow(uint256 escrow, uint256 needed);
    error NotEnoughProviders(uint256 m, uint256 registered);
    error UnknownRequest(uint256 id);
    error CommitClosed(uint256 id, uint256 commitEnd, uint256 commitEndBlock);
    error RevealNotOpen(uint256 id, uint256 commitEnd, uint256 commitEndBlock);
    error RevealClosed(uint256 id, uint256 revealEnd, uint256 revealEndBlock);
    error RevealOpen(uint256 id, uint256 revealEnd, uint256 revealEndBlock);
    error AlreadyFinalized(uint256 id);
    error AlreadyBid(uint256 id, address provider);
    error TooManyBids(uint256 id, uint256 maxBids);
    error CapacityTooSmall(address provider, uint256 capacity, uint256 units);
    error NoBid(uint256 id, address provider);
    error AlreadyRevealed(uint256 id, address provider);
    error RevealMismatch(uint256 id, address provider);
    error ZeroPrice();
    error BidAboveReserve(uint256 price, uint256 reserve);
    error SeedNotReady(uint256 id, uint256 seedBlock);
    error NotLeaseManager(address sender);
    error TooManyExclusions(uint256 count, uint256 max);
    error ProviderExcluded(uint256 id, address provider);

    event RequestPosted(
        uint256 indexed id,
        address indexed consumer,
        uint8 cls,
        uint256 units,
        uint256 term,
        uint256 m,
        uint256 mMin,
        uint256 reserve,
        uint256 escrow,
        uint256 commitEnd,
        uint256 revealEnd,
        uint256 commitEndBlock,
        uint256 revealEndBlock
    );
    event ProvidersExcluded(uint256 indexed id, address[] providers);
    event BidCommitted(uint256 indexed id, address indexed provider, bytes32 commitment);
    event BidRevealed(uint256 indexed id, address indexed provider, uint256 price);
    event SeedArmed(uint256 indexed id, uint256 seedBlock);
    event AuctionCleared(
        uint256 indexed id,
        uint8 cls,
        uint256 price,
        uint256 winners,
        uint256 bidders,
        uint256 volume,
        bytes32 seed,
        bool restricted
    );
    event WinnerLeased(uint256 indexed id, address indexed provider, uint256 leaseId);
    event AuctionFailed(uint256 indexed id, uint256 revealed, uint256 refund);
    event Refunded(uint256 indexed id, uint256 escrowRefund, uint256 forfeitedDeposits);
    event WinnerReplaced(
        uint256 indexed id, uint256 failedLease, address indexed provider, uint256 leaseId
    );
    event ReplacementRefunded(uint256 indexed id, uint256 failedLease, uint256 refund);

    IERC20 public immutable token;
    ProviderRegistry public immutable registry;
    ILeaseOpener public immutable leaseManager;
    uint256 public immutable commitWindow;
    uint256 public immutable revealWindow;
    uint256 public immutable commitBlocks;
    uint256 public immutable revealBlocks;
    uint256 public immutable seedDelay;
    uint256 public immutable bidDeposit;
    uint256 public immutable maxBids;

    uint256 public requestCount;
    mapping(uint256 id => Request) internal _requests;
    mapping(uint256 id => mapping(address provider => Bid)) internal _bids;
    /// Providers a request excludes from bidding.
    mapping(uint256 id => mapping(address provider => bool)) public excluded;
    mapping(uint256 id => address[]) internal _bidders;
    /// Revealed bids that did not win, in rank order (at most m per request).
    mapping(uint256 id => address[]) internal _runnersUp;
    /// The request each lease opened here came from.
    mapping(uint256 leaseId => uint256 id) public requestOfLease;

    constructor(
        IERC20 token_,
        ProviderRegistry registry_,
        ILeaseOpener leaseManager_,
        uint256 commitWindow_,
        uint256 revealWindow_,
        uint256 commitBlocks_,
        uint256 revealBlocks_,
        uint256 seedDelay_,
        uint256 bidDeposit_,
        uint256 maxBids_
    ) {
        // maxBids 2..255, seedDelay 0..200, each window some seconds or some blocks (both
        // bounded so every end fits its field)
        if (
            maxBids_ < 2 || maxBids_ > 255 || seedDelay_ > 200
                || commitWindow_ + commitBlocks_ == 0 || revealWindow_ + revealBlocks_ == 0
                || commitWindow_ > MAX_WINDOW || revealWindow_ > MAX_WINDOW
                || commitBlocks_ > MAX_WINDOW || revealBlocks_ > MAX_WINDOW
        ) {
            revert InvalidConfig();
        }
        token = token_;
        registry = registry_;
        leaseManager = leaseManager_;
        commitWindow = commitWindow_;
        revealWindow = revealWindow_;
        commitBlocks = commitBlocks_;
        revealBlocks = revealBlocks_;
        seedDelay = seedDelay_;
        bidDeposit = bidDeposit_;
        maxBids = maxBids_;
    }

    // ----------------------------------------------------------------- consumer

    /// Ask for `t.m` providers (at least `t.mMin`) of `t.units` each over `t.term` epochs at
    /// no more than `t.reserve` per unit, locking `t.escrow` (at least m x units x term x
    /// reserve) from the consumer's allowance; the providers in `exclude` may not bid.
    function post(Terms calldata t, address[] calldata exclude) external returns (uint256) {
        return _post(t, exclude);
    }

    /// `post`, the escrow allowed by the consumer's EIP-2612 permit (`deadline`, `v`, `r`,
    /// `s`) for exactly `t.escrow`: one transaction, no approval before it. A permit someone
    /// else submitted first (it is public once sent) has set the same allowance, so its
    /// failure here is ignored and the transfer decides.
    function postWithPermit(
        Terms calldata t,
        address[] calldata exclude,
        uint256 deadline,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external returns (uint256) {
        try IERC20Permit(address(token)).permit(
            msg.sender, address(this), t.escrow, deadline, v, r, s
        ) {} catch {}
        return _post(t, exclude);
    }

    // ----------------------------------------------------------------- providers

    /// Commit a sealed bid for `provider` (sent by its owner or operator), paying the deposit.
    function commit(uint256 id, address provider, bytes32 commitment) external {
        Request storage r = _open(id);
        if (!_commitOpen(r)) revert CommitClosed(id, r.commitEnd, r.commitEndBlock);
        if (r.excluded != 0 && excluded[id][provider]) revert ProviderExcluded(id, provider);
        registry.checkOperator(provider, msg.sender);
        registry.quote(provider, r.cls); // reverts unless it takes new leases of this class
        uint256 capacity = registry.getProvider(provider).capacity[r.cls];
        if (capacity < r.units) revert CapacityTooSmall(provider, capacity, r.units);
        Bid storage b = _bids[id][provider];
        if (b.commitment != bytes32(0)) revert AlreadyBid(id, provider);
        if (r.commits >= maxBids) revert TooManyBids(id, maxBids);
        r.commits += 1;
        b.commitment = commitment;
        b.depositor = msg.sender;
        _bidders[id].push(provider);
        emit BidCommitted(id, provider, commitment);
        if (bidDeposit > 0) token.safeTransferFrom(msg.sender, address(this), bidDeposit);
    }

    /// Open a committed bid during the reveal window; the deposit goes back to its payer.
    function reveal(uint256 id, address provider, uint128 price, bytes32 salt) external {
        Request storage r = _open(id);
        if (_commitOpen(r)) revert RevealNotOpen(id, r.commitEnd, r.commitEndBlock);
        if (!_revealOpen(r)) revert RevealClosed(id, r.revealEnd, _revealEndBlock(r));
        registry.checkOperator(provider, msg.sender);
        Bid storage b = _bids[id][provider];
        if (b.commitment == bytes32(0)) revert NoBid(id, provider);
        if (b.revealed) revert AlreadyRevealed(id, provider);
        if (commitmentOf(price, salt, provider, id) != b.commitment) {
            revert RevealMismatch(id, provider);
        }
        if (price == 0) revert ZeroPrice();
        if (price > r.reserve) revert BidAboveReserve(price, r.reserve);
        b.revealed = true;
        b.price = price;
        r.reveals += 1;
        if (r.seedBlock == 0) _armSeed(id, r);
        emit BidRevealed(id, provider, price);
        if (bidDeposit > 0) token.safeTransfer(b.depositor, bidDeposit);
    }

    // ----------------------------------------------------------------- anyone

    /// After the reveal window, or once the commit window is closed and every committed bid
    /// is revealed: clear, open the winners' leases, refund and forfeit.
    /// When the seed block's hash is no longer available (over 256 blocks old), a new seed
    /// block is armed instead and finalising is tried again once it is mined.
    function finalize(uint256 id) external {
        Request storage r = _open(id);
        _checkRevealsOver(id, r);
        uint256 forfeited = bidDeposit * (uint256(r.commits) - r.reveals);
        if (r.reveals < r.mMin) {
            uint256 back = uint256(r.escrow) + forfeited;
            r.status = Status.Failed;
            emit AuctionFailed(id, r.reveals, back);
            token.safeTransfer(r.consumer, back);
            return;
        }
        if (block.number <= r.seedBlock) revert SeedNotReady(id, r.seedBlock);
        bytes32 seed = blockhash(r.seedBlock);
        if (seed == NO_SEED) {
            _armSeed(id, r); // too old to read: fix a new block, finalise after it
            return;
        }
        (address[] memory winners, uint256 price) = _clear(id, r, seed);
        uint256 each = uint256(r.units) * r.term * price;
        uint256 spent = each * winners.length;
        uint256 refund = uint256(r.escrow) - spent + forfeited;
        r.status = Status.Cleared;
        r.price = uint128(price);
        r.winners = uint8(winners.length);
        _noteCleared(id, r, price, winners.length, seed);
        token.forceApprove(address(leaseManager), spent);
        for (uint256 i = 0; i < winners.length; ++i) {
            uint256 lease = leaseManager.openLeaseFor(
                r.consumer, winners[i], r.cls, r.units, r.term, price, each
            );
            requestOfLease[lease] = id;
            emit WinnerLeased(id, winners[i], lease);
        }
        emit Refunded(id, uint256(r.escrow) - spent, forfeited);
        if (refund > 0) token.safeTransfer(r.consumer, refund);
    }

    /// The LeaseManager hands back the escrow of a ticket this house opened that its provider
    /// declined or let expire: the next runner-up that still serves the class gets a Ticketed
    /// lease at the clearing price with it; if none, the consumer gets it back. Never reverts
    /// for the runners-up (a refusal of one moves on to the next), so a decline or an expiry
    /// cannot be blocked, and loops at most m times.
    function ticketFailed(uint256 leaseId, address consumer, uint256 refund) external {
        if (msg.sender != address(leaseManager)) revert NotLeaseManager(msg.sender);
        uint256 id = requestOfLease[leaseId];
        Request storage r = _requests[id];
        address[] storage runners = _runnersUp[id];
        uint256 k = r.replacements;
        while (id != 0 && k < runners.length) {
            address next = runners[k];
            ++k;
            try registry.quote(next, r.cls) returns (uint256) {}
            catch {
                continue; // no longer takes new leases of this class
            }
            token.forceApprove(address(leaseManager), refund);
            try leaseManager.openLeaseFor(
                consumer, next, r.cls, r.units, r.term, r.price, refund
            ) returns (uint256 lease) {
                r.replacements = uint8(k);
                requestOfLease[lease] = id;
                emit WinnerReplaced(id, leaseId, next, lease);
                return;
            } catch {
                token.forceApprove(address(leaseManager), 0);
            }
        }
        if (id != 0) r.replacements = uint8(k);
        emit ReplacementRefunded(id, leaseId, refund);
        if (refund > 0) token.safeTransfer(consumer, refund);
    }

    // ----------------------------------------------------------------- views

    /// The revealed bids of request `id` that did not win, in rank order (at most m).
    function runnersUp(uint256 id) external view returns (address[] memory) {
        return _runnersUp[id];
    }

    /// The sealed form of a bid, as `nuclux.core.auction.commitment` computes it.
    function commitmentOf(uint256 price, bytes32 salt, address provider, uint256 id)
        public
        pure
        returns (bytes32)
    {
        return keccak256(abi.encodePacked("nuclux/bid/v1", price, salt, provider, id));
    }

    /// The tie-break key of `provider` under `seed` (lower ranks first among equal prices).
    function tieKey(bytes32 seed, address provider) public pure returns (bytes32) {
        return keccak256(abi.encodePacked("nuclux/bid-tie/v1", seed, provider));
    }

    function getRequest(uint256 id) external view returns (Request memory) {
        return _requests[id];
    }

    function getBid(uint256 id, address provider) external view returns (Bid memory) {
        return _bids[id][provider];
    }

    /// The providers that committed on request `id`, in commit order (at most maxBids).
    function bidders(uint256 id) external view returns (address[] memory) {
        return _bidders[id];
    }

    // ----------------------------------------------------------------- internals

    function _post(Terms calldata t, address[] calldata exclude)
        internal
        returns (uint256 id)
    {
        if (t.cls >= NUM_CLASSES) revert InvalidClass(t.cls);
        if (t.units == 0 || t.term == 0 || t.reserve == 0) {
            revert ZeroTerms(t.units, t.term, t.reserve);
        }
        if (t.m == 0 || t.m > MAX_PROVIDERS || t.m > maxBids || t.mMin == 0 || t.mMin > t.m) {
            revert BadProviderCount(t.m, t.mMin); // 1 <= mMin <= m <= min(64, maxBids)
        }
        if (exclude.length > MAX_EXCLUDED) {
            revert TooManyExclusions(exclude.length, MAX_EXCLUDED);
        }
        uint256 needed = uint256(t.m) * t.units * t.term * t.reserve;
        if (t.escrow < needed) revert InsufficientEscrow(t.escrow, needed);
        id = ++requestCount;
        uint256 shut = _exclude(id, exclude);
        uint256 known = registry.providerCount();
        uint256 open = known > shut ? known - shut : 0;
        if (t.m > open) revert NotEnoughProviders(t.m, open);
        uint256 commitEnd = block.timestamp + commitWindow;
        Request storage r = _requests[id];
        r.consumer = msg.sender;
        r.cls = t.cls;
        r.m = t.m;
        r.mMin = t.mMin;
        r.status = Status.Open;
        r.units = t.units;
        r.term = t.term;
        r.commitEnd = uint40(commitEnd);
        r.revealEnd = uint40(commitEnd + revealWindow);
        r.commitEndBlock = uint40(block.number + commitBlocks);
        r.reserve = t.reserve;
        r.escrow = SafeCast.toUint128(t.escrow);
        r.excluded = uint8(shut);
        _announce(id, r);
        if (shut != 0) emit ProvidersExcluded(id, exclude);
        token.safeTransferFrom(msg.sender, address(this), t.escrow);
    }

    /// Mark `exclude` (duplicates counted once) as barred from request `id`; returns how many.
    function _exclude(uint256 id, address[] calldata exclude) internal returns (uint256 count) {
        mapping(address => bool) storage barred = excluded[id];
        for (uint256 i = 0; i < exclude.length; ++i) {
            if (barred[exclude[i]]) continue;
            barred[exclude[i]] = true;
            ++count;
        }
    }

    function _open(uint256 id) internal view returns (Request storage r) {
        r = _requests[id];
        if (r.status == Status.None) revert UnknownRequest(id);
        if (r.status != Status.Open) revert AlreadyFinalized(id);
    }

    /// Announce a clearing, and keep it for the reference price if enough bidders revealed.
    function _noteCleared(
        uint256 id,
        Request storage r,
        uint256 price,
        uint256 winners,
        bytes32 seed
    ) internal {
        uint256 volume = winners * r.units * r.term;
        bool restricted = r.excluded != 0;
        emit AuctionCleared(id, r.cls, price, winners, r.reveals, volume, seed, restricted);
        if (r.reveals < REF_MIN_BIDDERS || restricted) return;
        _recordClearing(r.cls, price, volume);
    }

    /// Store up to `m` revealed bids after the `count` winners of `ranked`, for replacements.
    function _keepRunnersUp(uint256 id, address[] memory ranked, uint256 count, uint256 m)
        internal
    {
        uint256 left = ranked.length - count;
        uint256 keep = left < m ? left : m;
        address[] storage runners = _runnersUp[id];
        for (uint256 i = 0; i < keep; ++i) runners.push(ranked[count + i]);
    }

    function _announce(uint256 id, Request storage r) internal {
        emit RequestPosted(
            id,
            r.consumer,
            r.cls,
            r.units,
            r.term,
            r.m,
            r.mMin,
            r.reserve,
            r.escrow,
            r.commitEnd,
            r.revealEnd,
            r.commitEndBlock,
            _revealEndBlock(r)
        );
    }

    /// The commit window is open while chain time or the block number has not passed its end.
    function _commitOpen(Request storage r) internal view returns (bool) {
        return block.timestamp <= r.commitEnd || block.number <= r.commitEndBlock;
    }

    /// Finalising waits for the end of the reveal window, unless the commit window is closed
    /// and every committed bid is revealed already (the outcome is fixed).
    function _checkRevealsOver(uint256 id, Request storage r) internal view {
        if (r.reveals == r.commits && !_commitOpen(r)) return;
        if (_revealOpen(r)) revert RevealOpen(id, r.revealEnd, _revealEndBlock(r));
    }

    function _revealEndBlock(Request storage r) internal view returns (uint256) {
        return uint256(r.commitEndBlock) + revealBlocks;
    }

    /// The reveal window (checked after the commit window closed) likewise.
    function _revealOpen(Request storage r) internal view returns (bool) {
        return block.timestamp <= r.revealEnd || block.number <= _revealEndBlock(r);
    }

    function _armSeed(uint256 id, Request storage r) internal {
        uint256 at = block.number + seedDelay;
        r.seedBlock = uint40(at);
        emit SeedArmed(id, at);
    }

    /// The winners in rank order and the uniform price: an insertion sort of the revealed
    /// bids by (price, tie key); at most maxBids of them. Up to m runners-up are stored.
    function _clear(uint256 id, Request storage r, bytes32 seed)
        internal
        returns (address[] memory winners, uint256 price)
    {
        address[] storage all = _bidders[id];
        uint256 n = r.reveals;
        address[] memory who = new address[](n);
        uint256[] memory prices = new uint256[](n);
        bytes32[] memory keys = new bytes32[](n);
        uint256 j = 0;
        for (uint256 i = 0; i < all.length; ++i) {
            Bid storage b = _bids[id][all[i]];
            if (!b.revealed) continue;
            uint256 p = b.price;
            bytes32 key = tieKey(seed, all[i]);
            uint256 k = j;
            while (k > 0 && (prices[k - 1] > p || (prices[k - 1] == p && keys[k - 1] > key))) {
                who[k] = who[k - 1];
                prices[k] = prices[k - 1];
                keys[k] = keys[k - 1];
                --k;
            }
            who[k] = all[i];
            prices[k] = p;
            keys[k] = key;
            ++j;
        }
        uint256 m = r.m;
        uint256 count = n < m ? n : m;
        winners = new address[](count);
        for (uint256 i = 0; i < count; ++i) winners[i] = who[i];
        price = n > m ? prices[m] : r.reserve;
        _keepRunnersUp(id, who, count, m);
    }
}
