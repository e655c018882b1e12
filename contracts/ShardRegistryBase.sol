// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";

import {IShardRegistryTypes} from "./IShardRegistry.sol";
import {AssignmentRecord, DrawQuery, ShardEvidence} from "./ShardEvidence.sol";

/// @title ShardRegistryBase
/// @notice The registry's state, parameters and the helpers both of its contracts use: {ShardRegistry} (what it
/// deploys and what everyone calls) and {ShardDisputes} (its posted commitments, slashing and paid verification,
/// reached by DELEGATECALL from the registry's forwarding functions, so they run on the registry's storage). Both
/// inherit this one contract, so their storage layouts are the same by construction.
abstract contract ShardRegistryBase is IShardRegistryTypes, Ownable2Step, EIP712 {
    /// @dev The hot per-address slot: read and written once per paid hop.
    struct Account {
        uint88 claimable;
        uint88 stake;
        uint40 bondedUntil; // nodes: stake stays slashable until then
        uint32 activeFrom; // coordinators: when the approval takes effect
        uint8 flags;
    }

    struct NodeExtra {
        uint128 unbonding;
        uint64 unbondingUntil;
        uint32 released; // assignments released since the draw reach last passed without a release: they hold
        uint32 releasedUntil; // model slots until block releasedUntil, so they count against MAX_LIVE_PER_NODE
        string endpoint;
    }


    struct ModelRecord {
        uint16 numLayers;
        uint80 price;
        address owner;
    }

    /// @dev Per job with posted commitments: the escrow they reserved (pending or paid), how many, whose job.
    struct Posted {
        uint88 paid;
        uint8 count;
        address client;
    }


    uint256 public constant MAX_HOPS = 16;
    uint256 public constant MAX_LIVE_PER_NODE = 16;
    uint256 public constant MAX_LIVE_PER_MODEL = 64;
    uint256 public constant MAX_STRING = 256;
    /// @notice Verifiers drawn per dispute (in draw order: the coordinator asks the first MIN_VERIFIERS, and all of
    /// them when any of those does not answer innocent), and the fewest a slash needs. 16 draws every other node of a
    /// span of up to 17, so the slash's majority is then of the whole span's other stake.
    uint256 public constant MAX_VERIFIERS = 16;
    uint256 public constant MIN_VERIFIERS = 2;
    /// @notice A job's verification share holds this many verdicts' pay for each of its layers' work (over the job:
    /// a hop whose check escalated may use what the other hops did not); `payVerifiers` pays verdicts while it lasts.
    uint256 public constant HELD_VERDICTS = 4;
    /// @notice Jobs one {payVerifiers} call may carry.
    uint256 public constant MAX_PAY_BATCH = 64;
    /// @notice leafIndex of an innocent {Verdict} (its leaf is 0): "every leaf of the hop is right".
    uint32 public constant INNOCENT_LEAF_INDEX = type(uint32).max;
    /// @notice The dispute randomness is blockhash(closeBlock + DRAW_DELAY): unknown when the work was committed.
    uint64 public constant DRAW_DELAY = 2;
    /// @dev blockhash reaches 256 blocks back: a job closed more than this many blocks ago can no longer be disputed,
    /// so an assignment released that long ago is in no draw any more and leaves its model's list.
    uint256 internal constant _DRAW_REACH = DRAW_DELAY + 256;

    uint8 internal constant _REGISTERED = 1;
    uint8 internal constant _JAILED = 2;
    uint8 internal constant _COORDINATOR = 4;
    uint8 internal constant _TOUCHED = 8; // keeps the slot non-zero, so later credits cost 2,900 gas, not 20,000
    uint256 internal constant _LOW = 0xFFFF;
    uint256 internal constant _HAS_POSTS = 0x100;
    uint256 internal constant _VERIFY_HELD = 0x200; // a settled job: its settlement held the verification share ...
    uint256 internal constant _VERIFY_SPENT = 0x400; // ... and it was paid out or refunded since
    // states of a posted commitment (bits 192-199 of its record; amount in bits 0-127, payableAt in 128-191)
    uint256 internal constant _POST_PENDING = 1;
    uint256 internal constant _POST_PAID = 2;
    uint256 internal constant _POST_VOIDED = 3;
    uint16 internal constant _BPS = 10_000;

    uint256 internal immutable _minStake;
    uint64 internal immutable _unbondingPeriod;
    uint64 internal immutable _jobTimeout;
    uint16 internal immutable _coordinatorFeeBps;
    uint16 internal immutable _slashBps;
    uint32 internal immutable _maxPromptTokens;
    uint64 internal immutable _approvalDelay;
    uint64 internal immutable _disputeWindow;
    uint16 internal immutable _protocolFeeBps;
    uint32 internal immutable _maxJobTokens;
    uint16 internal immutable _verifyBps;

    mapping(address => Account) internal _accounts;
    mapping(address => NodeExtra) internal _nodeExtra;
    mapping(address => string) internal _coordinatorEndpoints;
    mapping(address => uint256[]) internal _nodeLive;
    /// @dev Per node, checkpoints of stake + unbonding stake (block << 208 | weight, blocks ascending): a draw weighs
    /// each candidate as of the job's close.
    mapping(address => uint256[]) internal _weights;

    mapping(uint256 => ModelRecord) internal _models; // modelId => record (numLayers 0: no such model)
    uint256 internal _modelCount;
    mapping(uint256 => string[2]) internal _modelText; // name, manifestCid
    AssignmentRecord[] internal _assignments; // assignmentId = index + 1
    mapping(uint256 => uint256[]) internal _modelLive; // live assignments and those released within _DRAW_REACH

    mapping(uint256 => uint256) internal _jobs;
    mapping(uint256 => Posted) internal _posted;
    mapping(bytes32 => uint256) internal _postedHop; // keccak(jobId, node, start, end) => amount | payableAt | state
    mapping(bytes32 => bool) internal _slashed;

    uint256 internal _jobCount;
    uint128 internal _totalStaked;
    uint128 internal _totalUnbonding;
    uint256 internal _protocolFees;
    uint256 internal _pendingPosted;

    /// @param minStake_ least stake (wei) of a node; > 0 and below 2**96.
    /// @param unbondingPeriod_ seconds between {requestUnstake} and {withdrawStake}; at most 365 days.
    /// @param jobTimeout_ seconds from submission to the deadline; 1 s to 30 days.
    /// @param coordinatorFeeBps_ coordinator fee in basis points of node pay; at most 10000.
    /// @param slashBps_ share of stake and unbonding stake a slash takes; 1 to 10000.
    /// @param maxPromptTokens_ prompt positions a job may bill on top of `maxTokens`; at most 1,000,000.
    /// @param approvalDelay_ seconds before an approved coordinator may be named by jobs; at most 30 days.
    /// @param disputeWindow_ seconds a node's stake stays bonded after its last paid hop; 1 s to 90 days.
    /// @param protocolFeeBps_ protocol fee in basis points of node pay; at most 1000.
    /// @param maxJobTokens_ largest `maxTokens` a job may ask for (caps its escrow); 1 to 1,000,000.
    /// @param verifyBps_ each paid verdict's pay in basis points of the checked hop's pay; at most 10000 / HELD_VERDICTS.
    constructor(
        uint256 minStake_,
        uint64 unbondingPeriod_,
        uint64 jobTimeout_,
        uint16 coordinatorFeeBps_,
        uint16 slashBps_,
        uint32 maxPromptTokens_,
        uint64 approvalDelay_,
        uint64 disputeWindow_,
        uint16 protocolFeeBps_,
        uint32 maxJobTokens_,
        uint16 verifyBps_
    ) Ownable(msg.sender) EIP712("ShardRegistry", "2") {
        if (minStake_ == 0 || minStake_ > type(uint88).max) revert ShardRegistryInvalidParameter("minStake");
        if (unbondingPeriod_ > 365 days) revert ShardRegistryInvalidParameter("unbondingPeriod");
        if (jobTimeout_ == 0 || jobTimeout_ > 30 days) revert ShardRegistryInvalidParameter("jobTimeout");
        if (coordinatorFeeBps_ > _BPS) revert ShardRegistryInvalidParameter("coordinatorFeeBps");
        if (slashBps_ == 0 || slashBps_ > _BPS) revert ShardRegistryInvalidParameter("slashBps");
        if (maxPromptTokens_ > 1_000_000) revert ShardRegistryInvalidParameter("maxPromptTokens");
        if (approvalDelay_ > 30 days) revert ShardRegistryInvalidParameter("approvalDelay");
        if (disputeWindow_ == 0 || disputeWindow_ > 90 days) revert ShardRegistryInvalidParameter("disputeWindow");
        if (protocolFeeBps_ > 1000) revert ShardRegistryInvalidParameter("protocolFeeBps");
        if (maxJobTokens_ == 0 || maxJobTokens_ > 1_000_000) revert ShardRegistryInvalidParameter("maxJobTokens");
        _minStake = minStake_;
        _unbondingPeriod = unbondingPeriod_;
        _jobTimeout = jobTimeout_;
        _coordinatorFeeBps = coordinatorFeeBps_;
        _slashBps = slashBps_;
        _maxPromptTokens = maxPromptTokens_;
        _approvalDelay = approvalDelay_;
        _disputeWindow = disputeWindow_;
        _protocolFeeBps = protocolFeeBps_;
        _maxJobTokens = maxJobTokens_;
        if (verifyBps_ > _BPS / HELD_VERDICTS) revert ShardRegistryInvalidParameter("verifyBps");
        _verifyBps = verifyBps_;
    }


    /// @dev Reverts unless the hop's span lies in the model, its positions are in bounds, and the node signed it.
    function _checkHop(uint256 jobId, JobRecord calldata job, SignedCommitment calldata c, uint256 i) internal view {
        if (c.start >= c.end || c.end > job.numLayers) revert ShardRegistryInvalidHopSpan(jobId, i, c.start, c.end);
        uint256 maximum = uint256(job.maxTokens) + _maxPromptTokens;
        if (c.positions > maximum) revert ShardRegistryPositionsTooHigh(jobId, i, c.positions, maximum);
        _checkSignature(jobId, c, i);
    }

    function _checkSignature(uint256 jobId, SignedCommitment calldata c, uint256 i) internal view {
        address node = c.node;
        if (node == address(0) || _commitmentSigner(_domainSeparatorV4(), jobId, c) != node) {
            revert ShardRegistryBadCommitmentSignature(jobId, i, node);
        }
    }

    /// @dev The signer of an EIP-712 {Commitment} (address(0) if none), hashed straight from calldata: the struct
    /// hash covers (typehash, jobId, start, end, positions, steps, root), the five words after `node` in `c`. A
    /// field with dirty high bits hashes differently, so it can only fail the check. (r, vs) is EIP-2098; `s` must
    /// be in the lower half order (no malleable twin).
    function _commitmentSigner(bytes32 domainSeparator, uint256 jobId, SignedCommitment calldata c)
        internal
        view
        returns (address signer)
    {
        bytes32 typehash = ShardEvidence.COMMITMENT_TYPEHASH;
        bytes32 digest;
        bytes32 r;
        bytes32 vs;
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, typehash)
            mstore(add(m, 0x20), jobId)
            calldatacopy(add(m, 0x40), add(c, 0x20), 0xa0)
            let structHash := keccak256(m, 0xe0)
            mstore(m, 0x1901)
            mstore(add(m, 0x20), domainSeparator)
            mstore(add(m, 0x40), structHash)
            digest := keccak256(add(m, 0x1e), 0x42)
            r := calldataload(add(c, 0xc0))
            vs := calldataload(add(c, 0xe0))
        }
        uint256 s = uint256(vs) & ((1 << 255) - 1);
        if (s > 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0) return address(0);
        uint8 v = uint8((uint256(vs) >> 255) + 27);
        signer = ecrecover(digest, v, r, bytes32(s));
    }

    function _hopPay(JobRecord calldata job, SignedCommitment calldata c) internal pure returns (uint256) {
        return uint256(c.positions) * (c.end - c.start) * job.price;
    }

    function _openJob(uint256 jobId, JobRecord calldata job) internal view returns (uint256 slot) {
        slot = _jobs[jobId];
        if (slot == 0) revert ShardRegistryUnknownJob(jobId);
        if (uint8(slot) != uint8(JobStatus.Open)) revert ShardRegistryInvalidJobStatus(jobId, JobStatus(uint8(slot)));
        if (slot & ~_LOW != uint256(keccak256(abi.encode(jobId, job))) & ~_LOW) revert ShardRegistryJobRecordMismatch(jobId);
    }

    /// @dev keccak256(abi.encode(slot & ~_LOW, closeBlock)) & ~_LOW, hashed in scratch space.
    function _closedHash(uint256 slot, uint256 closeBlock) internal pure returns (uint256 h) {
        uint256 open = slot & ~_LOW;
        assembly ("memory-safe") {
            mstore(0, open)
            mstore(0x20, closeBlock)
            h := keccak256(0, 0x40)
        }
        h &= ~_LOW;
    }

    function _checkClosed(uint256 jobId, JobRecord calldata job, uint64 closeBlock) internal view {
        uint256 slot = _jobs[jobId];
        if (slot == 0) revert ShardRegistryUnknownJob(jobId);
        uint8 status = uint8(slot);
        if (status == uint8(JobStatus.Open)) revert ShardRegistryJobNotClosed(jobId);
        uint256 open = uint256(keccak256(abi.encode(jobId, job)));
        if (slot & ~_LOW != _closedHash(open, closeBlock)) revert ShardRegistryJobRecordMismatch(jobId);
    }

    /// @dev HELD_VERDICTS x verifyBps of the largest pay the job's record allows (what {_quote} charged for it).
    function _verificationShare(JobRecord calldata job) internal view returns (uint256) {
        // cannot overflow: numLayers < 2**32, maxTokens + maxPromptTokens < 2**33, price < 2**80, verifyBps <= 2000
        unchecked {
            uint256 base = uint256(job.numLayers) * (uint256(job.maxTokens) + _maxPromptTokens) * job.price;
            return (base * _verifyBps * HELD_VERDICTS) / _BPS;
        }
    }

    /// @dev The verifiers drawn for a dispute about `accused`'s hop (see {ShardEvidence.drawVerifiers}).
    function _draw(
        uint256 jobId,
        uint64 modelId,
        uint64 closeBlock,
        address accused,
        uint32 start,
        uint32 end,
        bytes32 root,
        uint256 picks
    ) internal view returns (address[] memory, uint256[] memory) {
        return ShardEvidence.drawVerifiers(
            _modelLive[modelId], _assignments, _weights, DrawQuery(jobId, closeBlock, accused, start, end, root, picks)
        );
    }

    /// @dev Checkpoints a node's stake + unbonding stake (its weight in draws of jobs closed from this block on).
    function _recordWeight(address node, uint256 weight) internal {
        uint256[] storage history = _weights[node];
        uint256 entry = (block.number << 208) | weight; // weight < 2**89, block numbers < 2**48
        uint256 n = history.length;
        if (n != 0 && history[n - 1] >> 208 == block.number) history[n - 1] = entry;
        else history.push(entry);
    }

    /// @dev Adds to a claimable balance.
    function _credit(address account, uint256 amount) internal {
        if (amount == 0) return;
        uint256 slot;
        uint256 word;
        assembly ("memory-safe") {
            mstore(0, account)
            mstore(0x20, _accounts.slot)
            slot := keccak256(0, 0x40)
            word := sload(slot)
        }
        uint256 mask88 = (1 << 88) - 1;
        uint256 claimableNow = (word & mask88) + amount;
        if (claimableNow > mask88) revert ShardRegistryAmountTooLarge(claimableNow, mask88);
        // same layout as in {_payHop}; the TOUCHED flag keeps the slot non-zero after a claim
        word = (word & ~mask88) | claimableNow | (uint256(_TOUCHED) << 248);
        assembly ("memory-safe") {
            sstore(slot, word)
        }
    }

    /// @dev Marks an assignment released (in this block) and swap-and-pops it out of its node's live list; it stays in
    /// its model's list, drawn for the disputes of jobs closed before, until {_prune} drops it.
    function _release(uint256 assignmentId, AssignmentRecord storage a) internal {
        a.live = false;
        a.releasedAt = uint64(block.number);
        NodeExtra storage extra = _nodeExtra[a.node];
        extra.released = block.number < extra.releasedUntil ? extra.released + 1 : 1;
        extra.releasedUntil = uint32(block.number + _DRAW_REACH);
        uint256[] storage byNode = _nodeLive[a.node];
        uint256 movedId = byNode[byNode.length - 1];
        byNode[a.nodeIndex] = movedId;
        _assignments[movedId - 1].nodeIndex = a.nodeIndex;
        byNode.pop();
        emit ShardReleased(assignmentId, a.node, a.modelId);
    }

    function _take(uint256 wanted, uint256 available) internal pure returns (uint256) {
        return wanted < available ? wanted : available;
    }
}
