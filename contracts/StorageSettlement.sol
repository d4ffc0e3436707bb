// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {ISettlementModule, LeaseView, State} from "./LeaseTypes.sol";
import {LeaseManager} from "./LeaseManager.sol";
import {ProviderRegistry} from "./ProviderRegistry.sol";
import {StorageProofs} from "./StorageProofs.sol";

/// @title StorageSettlement: storage leases paid per epoch of reserved capacity, gated by proofs.
/// @notice A storage lease holds every share a consumer keeps on a provider. Its state is an
/// EIP-712 `Revision(leaseId, revision, usedBytes, shareCount, root)` both sides sign off
/// chain; `root` is the RFC 9162 tree over `sha256(0x02 || shareRoot || uint64 leafCount)`,
/// one entry per share. Either side (or anyone holding the signatures) submits a newer
/// revision; the chain keeps the latest.
///
/// Seeds: the seed of epoch `e` is the hash of a block fixed in advance: the first call of
/// `armSeed(e)` (during or after epoch `e`) fixes block `number + seedDelay`; once that block
/// exists anyone records its hash (`recordSeed`, or the first proof that needs it). A zero
/// hash (not yet mined, or older than 256 blocks) reverts; a seed not recorded within 256
/// blocks of its block is lost for good.
///
/// Sampling: epoch `e` of lease `id` is sampled when keccak(seed, id) is 0 mod `sampleOneIn`,
/// and the last epoch of a term always is. The provider answers a sampled epoch with one
/// 256-byte leaf (chosen by the seed), its path to the share root and the share's path to the
/// lease root of the latest revision, before the end of the epoch after the one in which the
/// seed was recorded. Proofs are packed bytes, not ABI structs (`StorageProofs._verify` gives the layout):
/// under EIP-7623 a proof's gas is its calldata.
///
/// Pay: `advance` walks a lease's epochs in order, at most `maxEpochs` per call. An unsampled
/// epoch joins the current run; a proven sampled epoch pays itself and the run before it; a
/// sampled epoch not proven by its deadline, or one whose seed was lost, pays nothing and
/// forfeits the run. Entitlement is paid epochs x units x price: one storage read, so
/// LeaseManager.claim and settle pay exactly what `advance` has confirmed.
///
/// Disputes: the consumer may demand a proof of one share (the leaf again from a block hash
/// fixed at the demand); a demand not answered by its deadline is a fault reported to the
/// LeaseManager's penalty ladder and marks the share suspect. Two different revisions of one
/// lease with the same number, both signed by the provider, are a fault too (reported once
/// per lease and revision by anyone holding them, usually the consumer).
contract StorageSettlement is ISettlementModule, EIP712, StorageProofs {
    bytes32 public constant REVISION_TYPEHASH = keccak256(
        "Revision(uint256 leaseId,uint64 revision,uint64 usedBytes,uint64 shareCount,bytes32 root)"
    );
    /// Proven epochs are kept as bits relative to the cursor: at most this far ahead of it.
    uint256 public constant PROOF_WINDOW = 56;
    uint256 internal constant SAMPLE_TAG = 0;
    uint256 internal constant CHALLENGE_TAG = 1;
    uint256 internal constant BLOCKHASH_DEPTH = 256;

    struct Revision {
        uint64 revision;
        uint64 usedBytes;
        uint64 shareCount;
        bytes32 root;
    }

    /// Per lease: the latest revision and the pay cursor.
    struct Book {
        // slot 0
        bytes32 root;
        // slot 1
        uint64 revision;
        uint40 shareCount;
        uint32 cursor; // first epoch `advance` has not decided
        uint32 paidEpochs; // epochs confirmed for pay
        uint32 run; // unsampled epochs since the last proven or forfeited one
        uint56 proven; // bit i: epoch cursor + i has been proven
    }

    struct Seed {
        uint64 value; // 0 until recorded
        uint64 target; // the block whose hash is the seed; 0 until armed
        uint32 recordedEpoch;
    }

    struct Demand {
        uint64 target; // the block whose hash picks the leaf
        uint64 seed;
        uint40 deadline; // 0: no demand open
        uint40 shareIndex;
        uint32 lastEpoch; // one demand per lease per epoch
    }

    /// `advance`'s working state.
    struct Walk {
        uint256 cursor;
        uint256 paid;
        uint256 run;
        uint256 bits;
        uint256 end;
        uint256 now_;
    }

    error SubmissionClosed(uint256 id, State state);
    error StaleRevision(uint256 id, uint64 latest, uint64 submitted);
    error BadSignature(uint256 id, address expected, address recovered);
    error TooManyShares(uint256 shareCount);
    error EpochNotStarted(uint256 epoch);
    error SeedAlreadyArmed(uint256 epoch, uint256 target);
    error SeedNotArmed(uint256 epoch);
    error SeedNotRecorded(uint256 epoch);
    error SeedNotReady(uint256 target, uint256 blockNumber);
    error ZeroSeed(uint256 target);
    error ProofTooLate(uint256 id, uint256 epoch);
    error EpochDecided(uint256 id, uint256 epoch);
    error AdvanceFirst(uint256 id, uint256 cursor);
    error NotConsumer(uint256 id, address sender);
    error NoSuchShare(uint256 id, uint256 shareIndex, uint256 shareCount);
    error DemandOpen(uint256 id, uint256 deadline);
    error OneDemandPerEpoch(uint256 id);
    error NoDemand(uint256 id);
    error DemandNotDue(uint256 id, uint256 deadline);
    error UnknownLease(uint256 id);
    error NotSameRevision(uint256 id, uint64 a, uint64 b);
    error NotConflicting(uint256 id, uint64 revision);
    error ConflictAlreadyReported(uint256 id, uint64 revision);
    error BadParameter();

    event RevisionSubmitted(
        uint256 indexed id,
        uint64 revision,
        uint64 usedBytes,
        uint64 shareCount,
        bytes32 root,
        address by
    );
    event SeedArmed(uint256 indexed epoch, uint256 target);
    event SeedRecorded(uint256 indexed epoch, uint64 seed);
    event EpochProven(uint256 indexed id, uint256 indexed epoch, uint64 revision);
    event Advanced(uint256 indexed id, uint256 cursor, uint256 paidEpochs, uint256 run);
    event ProofDemanded(uint256 indexed id, uint256 shareIndex, uint256 target, uint256 deadline);
    event DemandAnswered(uint256 indexed id, uint64 revision, uint256 shareIndex);
    event DemandMissed(uint256 indexed id, uint64 revision, uint256 shareIndex, bool leaseFailed);
    event ConflictReported(uint256 indexed id, uint64 revision, address by, bool leaseFailed);

    LeaseManager public immutable leases;
    ProviderRegistry public immutable registry;
    uint256 public immutable epochLength;
    uint256 public immutable sampleOneIn;
    uint256 public immutable seedDelay;
    uint256 public immutable demandWindow;

    mapping(uint256 id => Book) public books;
    mapping(uint256 epoch => Seed) public seeds;
    mapping(uint256 id => Demand) public demands;
    /// Shares a missed demand marked, by lease and `revision << 64 | shareIndex`.
    mapping(uint256 id => mapping(uint256 key => bool)) public suspect;
    /// Revision numbers for which two conflicting provider-signed revisions were reported.
    mapping(uint256 id => mapping(uint64 revision => bool)) public conflictReported;

    constructor(
        LeaseManager leases_,
        ProviderRegistry registry_,
        uint256 epochLength_,
        uint256 disputeWindow_,
        uint256 sampleOneIn_,
        uint256 seedDelay_,
        uint256 demandWindow_
    ) EIP712("Nuclux Storage", "1") {
        if (sampleOneIn_ == 0 || seedDelay_ == 0 || seedDelay_ >= BLOCKHASH_DEPTH) {
            revert BadParameter();
        }
        // the lease manager is deployed after its modules (its address is known, its code
        // not yet): its epoch length and dispute window come as parameters, the same values
        if (epochLength_ == 0 || demandWindow_ == 0 || demandWindow_ > disputeWindow_) {
            revert BadParameter();
        }
        leases = leases_;
        registry = registry_;
        epochLength = epochLength_;
        sampleOneIn = sampleOneIn_;
        seedDelay = seedDelay_;
        demandWindow = demandWindow_;
    }

    function epoch() public view returns (uint256) {
        return block.timestamp / epochLength;
    }

    // ----------------------------------------------------------------- seeds

    /// Fix the block whose hash will be epoch `e`'s seed: `seedDelay` blocks from now.
    function armSeed(uint256 e) external {
        if (e > epoch()) revert EpochNotStarted(e);
        Seed storage s = seeds[e];
        if (s.target != 0) revert SeedAlreadyArmed(e, s.target);
        uint256 target = block.number + seedDelay;
        s.target = uint64(target);
        emit SeedArmed(e, target);
    }

    /// Record epoch `e`'s seed (a no-op once recorded); reverts until its block exists and
    /// once its hash is no longer available.
    function recordSeed(uint256 e) external returns (uint64) {
        (uint64 value,) = _seed(e);
        return value;
    }

    // ----------------------------------------------------------------- revisions

    function revisionDigest(uint256 id, Revision calldata r) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(
                abi.encode(REVISION_TYPEHASH, id, r.revision, r.usedBytes, r.shareCount, r.root)
            )
        );
    }

    /// Record a newer revision both sides signed (the provider by its owner or operator key).
    function submitRevision(
        uint256 id,
        Revision calldata r,
        bytes calldata consumerSig,
        bytes calldata providerSig
    ) external {
        _submit(id, r, consumerSig, providerSig);
    }

    // ----------------------------------------------------------------- proofs

    /// Prove sampled epoch `e` of lease `id` against the latest revision on chain. The
    /// calldata is not ABI-encoded: this function's selector, then `uint64 id || uint32 e ||
    /// proof`, the proof packed as `_verify` reads it (empty for a lease with no shares).
    function prove() external {
        if (msg.data.length < 16) revert BadProof(0, ENCODING);
        uint256 id;
        uint256 e;
        assembly ("memory-safe") {
            id := shr(192, calldataload(4))
            e := shr(224, calldataload(12))
        }
        _prove(id, e, 16, msg.data.length - 16);
    }

    /// Submit a newer co-signed revision, then prove against it, in one transaction.
    function proveWithRevision(
        uint256 id,
        uint256 e,
        Revision calldata r,
        bytes calldata consumerSig,
        bytes calldata providerSig,
        bytes calldata proof
    ) external {
        _submit(id, r, consumerSig, providerSig);
        _prove(id, e, _offset(proof), proof.length);
    }

    /// Decide up to `maxEpochs` more epochs of lease `id` in order, stopping at the first one
    /// that cannot be decided yet (seed not recorded, or sampled and still within its proof
    /// deadline). Anyone may call it while the lease takes submissions.
    function advance(uint256 id, uint256 maxEpochs) external returns (uint256 processed) {
        (uint256 start, uint256 end) = _openTerm(id);
        Book storage b = books[id];
        Walk memory w = Walk(b.cursor, b.paidEpochs, b.run, b.proven, end, epoch());
        if (w.cursor == 0) w.cursor = start;
        uint256 limit = end < w.now_ ? end : w.now_;
        if (limit > w.cursor && limit - w.cursor > maxEpochs) limit = w.cursor + maxEpochs;
        uint256 e = _walk(id, w, limit);
        processed = e - w.cursor;
        b.cursor = uint32(e);
        b.paidEpochs = uint32(w.paid);
        b.run = uint32(w.run);
        b.proven = uint56(w.bits >> processed);
        emit Advanced(id, e, w.paid, w.run);
    }

    // ----------------------------------------------------------------- disputes

    /// The consumer demands a proof of share `shareIndex` of the latest revision, due within
    /// `demandWindow`; the leaf is picked by the hash of a block `seedDelay` blocks ahead.
    function demand(uint256 id, uint256 shareIndex) external {
        (address consumer,, State st, uint256 deadline,,) = leases.terms(id);
        if (msg.sender != consumer) revert NotConsumer(id, msg.sender);
        uint256 due = block.timestamp + demandWindow;
        if (!_open(st, deadline) || (st == State.Closing && due > deadline)) {
            revert SubmissionClosed(id, st);
        }
        uint256 count = books[id].shareCount;
        if (shareIndex >= count) revert NoSuchShare(id, shareIndex, count);
        Demand storage d = demands[id];
        if (d.deadline != 0) revert DemandOpen(id, d.deadline);
        uint256 now_ = epoch();
        if (d.lastEpoch == now_) revert OneDemandPerEpoch(id);
        uint256 target = block.number + seedDelay;
        demands[id] = Demand(uint64(target), 0, uint40(due), uint40(shareIndex), uint32(now_));
        emit ProofDemanded(id, shareIndex, target, due);
    }

    /// Record the block hash that picks the demanded leaf (the answer does it if needed).
    function recordDemandSeed(uint256 id) public returns (uint64 seed) {
        Demand storage d = demands[id];
        if (d.deadline == 0) revert NoDemand(id);
        seed = d.seed;
        if (seed != 0) return seed;
        uint256 target = d.target;
        if (block.number <= target) revert SeedNotReady(target, block.number);
        seed = _hashSeed(target);
        d.seed = seed;
    }

    /// Answer the open demand on lease `id` against the latest revision on chain. The calldata
    /// is packed as for `prove`: this function's selector, then `uint64 id || proof`.
    function answerDemand() external {
        if (msg.data.length < 12) revert BadProof(0, ENCODING);
        uint256 id;
        assembly ("memory-safe") {
            id := shr(192, calldataload(4))
        }
        _answer(id, 12, msg.data.length - 12);
    }

    /// Answer the open demand on lease `id` with the packed proof at calldata `[off, off + len)`.
    function _answer(uint256 id, uint256 off, uint256 len) internal {
        Demand memory d = demands[id];
        if (d.deadline == 0) revert NoDemand(id);
        if (block.timestamp > d.deadline) revert ProofTooLate(id, d.deadline);
        uint64 seed = d.seed != 0 ? d.seed : recordDemandSeed(id);
        Book memory b = books[id];
        uint256 share = d.shareIndex;
        if (b.shareCount != 0) {
            share %= b.shareCount;
            uint256 c = _draw(CHALLENGE_TAG, seed, id);
            _verify(id, b.root, share, b.shareCount, c, off, len);
        }
        demands[id] = Demand(0, 0, 0, 0, d.lastEpoch);
        emit DemandAnswered(id, b.revision, share);
    }

    /// A demand passed its deadline unanswered: a fault of the provider, and the share is
    /// marked suspect. Anyone may report it.
    function reportMissedDemand(uint256 id) external returns (bool failed) {
        Demand memory d = demands[id];
        if (d.deadline == 0) revert NoDemand(id);
        if (block.timestamp <= d.deadline) revert DemandNotDue(id, d.deadline);
        Book memory b = books[id];
        uint256 share = b.shareCount == 0 ? d.shareIndex : d.shareIndex % b.shareCount;
        demands[id] = Demand(0, 0, 0, 0, d.lastEpoch);
        suspect[id][(uint256(b.revision) << 64) | share] = true;
        failed = leases.reportFault(id, "missed-proof");
        emit DemandMissed(id, b.revision, share, failed);
    }

    /// Two revisions of lease `id` with the same number and different contents (used bytes,
    /// share count or root), each signed by the provider's owner or operator key: the
    /// provider signed conflicting statements, a fault. Anyone may report it, once per lease
    /// and revision number; the lease must still be Active, ActiveTicketed or Closing.
    function reportConflict(
        uint256 id,
        Revision calldata a,
        bytes calldata providerSigA,
        Revision calldata b,
        bytes calldata providerSigB
    ) external returns (bool failed) {
        (, address provider,,,,) = leases.terms(id);
        if (provider == address(0)) revert UnknownLease(id);
        if (a.revision != b.revision) revert NotSameRevision(id, a.revision, b.revision);
        if (a.usedBytes == b.usedBytes && a.shareCount == b.shareCount && a.root == b.root) {
            revert NotConflicting(id, a.revision);
        }
        if (conflictReported[id][a.revision]) revert ConflictAlreadyReported(id, a.revision);
        registry.checkOperator(provider, ECDSA.recover(revisionDigest(id, a), providerSigA));
        registry.checkOperator(provider, ECDSA.recover(revisionDigest(id, b), providerSigB));
        conflictReported[id][a.revision] = true;
        failed = leases.reportFault(id, "conflicting-revision");
        emit ConflictReported(id, a.revision, msg.sender, failed);
    }

    // ----------------------------------------------------------------- views

    function entitlement(uint256 id, LeaseView calldata l, uint256)
        external
        view
        returns (uint256)
    {
        return uint256(books[id].paidEpochs) * l.units * l.price;
    }

    /// Whether epoch `e` of lease `id` is sampled (its seed must be recorded).
    function isSampled(uint256 id, uint256 e) external view returns (bool) {
        uint64 value = seeds[e].value;
        if (value == 0) revert SeedNotRecorded(e);
        (,,,,, uint256 end) = leases.terms(id);
        return e + 1 == end || _sampled(value, id);
    }

    /// The sampling draw for any seed (mirrored by `nuclux.core.challenge.is_sampled`).
    function sampledBy(uint64 seed, uint256 id) external view returns (bool) {
        return _sampled(seed, id);
    }

    /// The challenged share and leaf for any seed (mirrored by `nuclux.core.challenge`).
    function challengeOf(uint64 seed, uint256 id, uint256 shareCount, uint256 leafCount)
        external
        pure
        returns (uint256 shareIndex, uint256 leafIndex)
    {
        uint256 c = _draw(CHALLENGE_TAG, seed, id);
        return ((c >> 128) % shareCount, uint128(c) % leafCount);
    }

    // ----------------------------------------------------------------- internals

    function _open(State st, uint256 deadline) internal view returns (bool) {
        return st == State.Active || st == State.ActiveTicketed
            || (st == State.Closing && block.timestamp < deadline);
    }

    /// The lease's term; reverts unless it takes submissions.
    function _openTerm(uint256 id) internal view returns (uint256 start, uint256 end) {
        State st;
        uint256 deadline;
        (,, st, deadline, start, end) = leases.terms(id);
        if (!_open(st, deadline)) revert SubmissionClosed(id, st);
    }

    /// Decide epochs from `w.cursor` up to `limit`; returns the first undecided epoch.
    function _walk(uint256 id, Walk memory w, uint256 limit) internal view returns (uint256 e) {
        for (e = w.cursor; e < limit; ++e) {
            Seed memory s = seeds[e];
            if (s.value == 0) {
                if (s.target != 0 && block.number > uint256(s.target) + BLOCKHASH_DEPTH) {
                    w.run = 0; // the seed was lost: nothing vouches for this epoch or the run
                    continue;
                }
                break; // not armed, or not recorded yet
            }
            if (e + 1 != w.end && !_sampled(s.value, id)) {
                ++w.run;
            } else if ((w.bits >> (e - w.cursor)) & 1 != 0) {
                w.paid += w.run + 1;
                w.run = 0;
            } else if (w.now_ > uint256(s.recordedEpoch) + 1) {
                w.run = 0; // missed: this epoch and the run before it are not paid
            } else {
                break; // sampled, still within its proof deadline
            }
        }
    }

    function _submit(
        uint256 id,
        Revision calldata r,
        bytes calldata consumerSig,
        bytes calldata providerSig
    ) internal {
        Book storage b = books[id];
        if (r.revision <= b.revision) revert StaleRevision(id, b.revision, r.revision);
        if (r.shareCount > type(uint40).max) revert TooManyShares(r.shareCount);
        uint256 start = _checkSigned(id, revisionDigest(id, r), consumerSig, providerSig);
        b.root = r.root;
        b.revision = r.revision;
        b.shareCount = uint40(r.shareCount);
        if (b.cursor == 0) b.cursor = uint32(start);
        emit RevisionSubmitted(id, r.revision, r.usedBytes, r.shareCount, r.root, msg.sender);
    }

    /// Reverts unless the lease takes submissions and `digest` is signed by its consumer and
    /// by its provider's owner or operator; returns the lease's first epoch.
    function _checkSigned(
        uint256 id,
        bytes32 digest,
        bytes calldata consumerSig,
        bytes calldata providerSig
    ) internal view returns (uint256 start) {
        (address consumer, address provider, State st, uint256 deadline, uint256 first,) =
            leases.terms(id);
        if (!_open(st, deadline)) revert SubmissionClosed(id, st);
        address byConsumer = ECDSA.recover(digest, consumerSig);
        if (byConsumer != consumer) revert BadSignature(id, consumer, byConsumer);
        registry.checkOperator(provider, ECDSA.recover(digest, providerSig));
        return first;
    }

    /// Prove epoch `e` of lease `id` with the packed proof at calldata `[off, off + len)`.
    function _prove(uint256 id, uint256 e, uint256 off, uint256 len) internal {
        (uint64 seed, uint256 recordedEpoch) = _seed(e);
        if (epoch() > recordedEpoch + 1) revert ProofTooLate(id, e);
        Book memory b = books[id];
        uint256 cursor = b.cursor;
        if (cursor == 0) {
            (,,,, cursor,) = leases.terms(id);
            books[id].cursor = uint32(cursor);
        }
        if (e < cursor) revert EpochDecided(id, e);
        if (e - cursor >= PROOF_WINDOW) revert AdvanceFirst(id, cursor);
        if (b.shareCount != 0) {
            uint256 c = _draw(CHALLENGE_TAG, seed, id);
            _verify(id, b.root, (c >> 128) % b.shareCount, b.shareCount, c, off, len);
        }
        books[id].proven = b.proven | uint56(1 << (e - cursor));
        emit EpochProven(id, e, b.revision);
    }

    /// Epoch `e`'s seed and the epoch it was recorded in, recording it if it is not yet.
    function _seed(uint256 e) internal returns (uint64 value, uint256 recordedEpoch) {
        Seed memory s = seeds[e];
        if (s.value != 0) return (s.value, s.recordedEpoch);
        if (s.target == 0) revert SeedNotArmed(e);
        if (block.number <= s.target) revert SeedNotReady(s.target, block.number);
        value = _hashSeed(s.target);
        recordedEpoch = epoch();
        seeds[e] = Seed(value, s.target, uint32(recordedEpoch));
        emit SeedRecorded(e, value);
    }

    /// The first 8 bytes of block `target`'s hash (never 0); reverts when the hash is zero.
    function _hashSeed(uint256 target) internal view returns (uint64 value) {
        bytes32 h = blockhash(target);
        if (h == 0) revert ZeroSeed(target);
        value = uint64(bytes8(h));
        if (value == 0) value = 1;
    }

    function _sampled(uint64 seed, uint256 id) internal view returns (bool) {
        return _draw(SAMPLE_TAG, seed, id) % sampleOneIn == 0;
    }

    /// keccak256(uint256(tag << 64 | seed) || uint256(id)).
    function _draw(uint256 tag, uint64 seed, uint256 id) internal pure returns (uint256 r) {
        assembly ("memory-safe") {
            mstore(0, or(shl(64, tag), seed))
            mstore(32, id)
            r := keccak256(0, 64)
        }
    }
}
