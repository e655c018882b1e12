// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

import {IShardRegistry} from "./IShardRegistry.sol";
import {ShardEvidence} from "./ShardEvidence.sol";

/// @title ShardRegistry (protocol v2)
/// @notice See {IShardRegistry} and docs/PROTOCOL.md.
/// @dev Ids of models, assignments and jobs start at 1. A job is stored as one slot: the hash of its
/// {JobRecord} (high 240 bits), a flag "has posted commitments" (bit 8) and its status (low 8 bits); once
/// closed, the hash also covers the closing block. Ether leaves only through {claim}.
/// Invariant: see {IShardRegistry} (balance == stakes + unbonding + open escrow + claimable + protocol fees).
contract ShardRegistry is IShardRegistry, Ownable2Step, ReentrancyGuardTransient, EIP712 {
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

    struct AssignmentRecord {
        address node; // slot 0
        uint16 start;
        uint16 end;
        bool live;
        uint56 modelId;
        uint32 nodeIndex; // slot 1: positions in the live lists
        uint32 modelIndex;
        uint64 announcedAt; // block: an assignment announced after a job closed is not drawn for its disputes
        uint64 releasedAt; // block (0: live): one released after a job closed is still drawn for its disputes
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
    /// @notice The dispute randomness is blockhash(closeBlock + DRAW_DELAY): unknown when the work was committed.
    uint64 public constant DRAW_DELAY = 2;
    /// @dev blockhash reaches 256 blocks back: a job closed more than this many blocks ago can no longer be disputed,
    /// so an assignment released that long ago is in no draw any more and leaves its model's list.
    uint256 private constant _DRAW_REACH = DRAW_DELAY + 256;

    uint8 private constant _REGISTERED = 1;
    uint8 private constant _JAILED = 2;
    uint8 private constant _COORDINATOR = 4;
    uint8 private constant _TOUCHED = 8; // keeps the slot non-zero, so later credits cost 2,900 gas, not 20,000
    uint256 private constant _LOW = 0xFFFF;
    uint256 private constant _HAS_POSTS = 0x100;
    // states of a posted commitment (bits 192-199 of its record; amount in bits 0-127, payableAt in 128-191)
    uint256 private constant _POST_PENDING = 1;
    uint256 private constant _POST_PAID = 2;
    uint256 private constant _POST_VOIDED = 3;
    uint16 private constant _BPS = 10_000;

    uint256 private immutable _minStake;
    uint64 private immutable _unbondingPeriod;
    uint64 private immutable _jobTimeout;
    uint16 private immutable _coordinatorFeeBps;
    uint16 private immutable _slashBps;
    uint32 private immutable _maxPromptTokens;
    uint64 private immutable _approvalDelay;
    uint64 private immutable _disputeWindow;
    uint16 private immutable _protocolFeeBps;
    uint32 private immutable _maxJobTokens;

    mapping(address => Account) private _accounts;
    mapping(address => NodeExtra) private _nodeExtra;
    mapping(address => string) private _coordinatorEndpoints;
    mapping(address => uint256[]) private _nodeLive;
    /// @dev Per node, checkpoints of stake + unbonding stake (block << 208 | weight, blocks ascending): a draw weighs
    /// each candidate as of the job's close.
    mapping(address => uint256[]) private _weights;

    mapping(uint256 => ModelRecord) private _models; // modelId => record (numLayers 0: no such model)
    uint256 private _modelCount;
    mapping(uint256 => string[2]) private _modelText; // name, manifestCid
    AssignmentRecord[] private _assignments; // assignmentId = index + 1
    mapping(uint256 => uint256[]) private _modelLive; // live assignments and those released within _DRAW_REACH

    mapping(uint256 => uint256) private _jobs;
    mapping(uint256 => Posted) private _posted;
    mapping(bytes32 => uint256) private _postedHop; // keccak(jobId, node, start, end) => amount | payableAt | state
    mapping(bytes32 => bool) private _slashed;

    uint256 private _jobCount;
    uint128 private _totalStaked;
    uint128 private _totalUnbonding;
    uint256 private _protocolFees;
    uint256 private _pendingPosted;

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
        uint32 maxJobTokens_
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
    }

    // ---------------------------------------------------------------- governance

    /// @inheritdoc IShardRegistry
    function setCoordinator(address coordinator, string calldata endpoint, bool approved) external onlyOwner {
        _checkString("endpoint", endpoint);
        Account storage account = _accounts[coordinator];
        uint64 activeFrom = 0;
        if (approved && account.flags & _COORDINATOR != 0) {
            activeFrom = account.activeFrom; // a new endpoint of an approved coordinator: its jobs stay settleable
        } else if (approved) {
            activeFrom = uint64(block.timestamp) + _approvalDelay;
            account.flags |= _COORDINATOR | _TOUCHED;
        } else {
            account.flags &= ~_COORDINATOR;
        }
        account.activeFrom = uint32(activeFrom);
        _coordinatorEndpoints[coordinator] = endpoint;
        emit CoordinatorSet(coordinator, endpoint, approved, activeFrom);
    }

    /// @inheritdoc IShardRegistry
    function withdrawFees(address to) external onlyOwner {
        if (to == address(0) || to == address(this)) revert ShardRegistryInvalidRecipient(to);
        uint256 amount = _protocolFees;
        if (amount == 0) revert ShardRegistryZeroAmount();
        _protocolFees = 0;
        _credit(to, amount);
        emit FeesWithdrawn(to, amount);
    }

    // ---------------------------------------------------------------- nodes

    /// @inheritdoc IShardRegistry
    function registerNode(string calldata endpoint) external payable {
        _checkString("endpoint", endpoint);
        Account storage account = _accounts[msg.sender];
        uint8 flags = account.flags;
        if (flags & _JAILED != 0) revert ShardRegistryNodeJailed(msg.sender);
        if (flags & _REGISTERED != 0) revert ShardRegistryAlreadyRegistered(msg.sender);
        if (msg.value < _minStake) revert ShardRegistryInsufficientStake(msg.value, _minStake);
        uint256 stake = _checkedStake(uint256(account.stake) + msg.value);
        account.stake = uint88(stake);
        account.flags = flags | _REGISTERED | _TOUCHED;
        NodeExtra storage extra = _nodeExtra[msg.sender];
        extra.endpoint = endpoint;
        _recordWeight(msg.sender, stake + extra.unbonding);
        _totalStaked += uint128(msg.value);
        emit NodeRegistered(msg.sender, endpoint, msg.value);
    }

    /// @inheritdoc IShardRegistry
    function updateEndpoint(string calldata endpoint) external {
        _checkString("endpoint", endpoint);
        _registered(msg.sender);
        _nodeExtra[msg.sender].endpoint = endpoint;
        emit EndpointUpdated(msg.sender, endpoint);
    }

    /// @inheritdoc IShardRegistry
    function addStake() external payable {
        Account storage account = _registered(msg.sender);
        if (msg.value == 0) revert ShardRegistryZeroAmount();
        uint256 newStake = _checkedStake(uint256(account.stake) + msg.value);
        account.stake = uint88(newStake);
        _recordWeight(msg.sender, newStake + _nodeExtra[msg.sender].unbonding);
        _totalStaked += uint128(msg.value);
        emit StakeAdded(msg.sender, msg.value, newStake);
    }

    /// @inheritdoc IShardRegistry
    /// @dev A new request restarts the unbonding period of everything already unbonding.
    function requestUnstake(uint256 amount) external {
        Account storage account = _registered(msg.sender);
        if (amount == 0) revert ShardRegistryZeroAmount();
        uint256 stake = account.stake;
        if (amount > stake) revert ShardRegistryUnstakeTooLarge(amount, stake);
        uint256 live = _nodeLive[msg.sender].length;
        if (stake - amount < _minStake && live != 0) revert ShardRegistryHasLiveAssignments(msg.sender, uint32(live));
        NodeExtra storage extra = _nodeExtra[msg.sender];
        uint64 until = uint64(block.timestamp) + _unbondingPeriod;
        account.stake = uint88(stake - amount);
        extra.unbonding += uint128(amount);
        extra.unbondingUntil = until; // stake + unbonding (a draw's weight) is unchanged
        _totalStaked -= uint128(amount);
        _totalUnbonding += uint128(amount);
        emit UnstakeRequested(msg.sender, amount, until);
    }

    /// @inheritdoc IShardRegistry
    /// @dev The record of a node left with nothing is kept (unregistered), so a jail is never forgotten.
    function withdrawStake() external {
        Account storage account = _registered(msg.sender);
        NodeExtra storage extra = _nodeExtra[msg.sender];
        uint256 amount = extra.unbonding;
        if (amount == 0) revert ShardRegistryNothingToWithdraw(msg.sender);
        uint64 until = extra.unbondingUntil > account.bondedUntil ? extra.unbondingUntil : account.bondedUntil;
        if (block.timestamp < until) revert ShardRegistryStillUnbonding(until);
        extra.unbonding = 0;
        extra.unbondingUntil = 0;
        _recordWeight(msg.sender, account.stake);
        _totalUnbonding -= uint128(amount);
        if (account.stake == 0 && _nodeLive[msg.sender].length == 0) account.flags &= ~_REGISTERED;
        _credit(msg.sender, amount);
        emit StakeWithdrawn(msg.sender, amount);
    }

    // ---------------------------------------------------------------- models and shards

    /// @inheritdoc IShardRegistry
    function registerModel(
        string calldata name,
        string calldata manifestCid,
        uint32 numLayers,
        uint256 pricePerLayerToken
    ) external returns (uint256 modelId) {
        _checkString("name", name);
        _checkString("manifestCid", manifestCid);
        if (bytes(name).length == 0) revert ShardRegistryInvalidModel("empty name");
        if (bytes(manifestCid).length == 0) revert ShardRegistryInvalidModel("empty manifestCid");
        if (numLayers == 0 || numLayers > type(uint16).max) revert ShardRegistryInvalidModel("numLayers must be 1..65535");
        if (pricePerLayerToken > type(uint80).max) revert ShardRegistryInvalidModel("pricePerLayerToken above 2**80");
        modelId = ++_modelCount;
        _models[modelId] = ModelRecord(uint16(numLayers), uint80(pricePerLayerToken), msg.sender);
        _modelText[modelId] = [name, manifestCid];
        emit ModelRegistered(modelId, msg.sender, name, manifestCid, numLayers, pricePerLayerToken);
    }

    /// @inheritdoc IShardRegistry
    function announceShard(uint256 modelId, uint32 start, uint32 end) external returns (uint256 assignmentId) {
        Account storage account = _registered(msg.sender);
        if (account.flags & _JAILED != 0) revert ShardRegistryNodeJailed(msg.sender);
        if (account.stake < _minStake) revert ShardRegistryInsufficientStake(account.stake, _minStake);
        ModelRecord storage model = _model(modelId);
        if (start >= end || end > model.numLayers) revert ShardRegistryInvalidSpan(start, end, model.numLayers);
        uint256[] storage byNode = _nodeLive[msg.sender];
        uint256[] storage byModel = _modelLive[modelId];
        _prune(byModel);
        NodeExtra storage extra = _nodeExtra[msg.sender];
        uint256 held = byNode.length + (block.number < extra.releasedUntil ? extra.released : 0);
        if (held >= MAX_LIVE_PER_NODE) revert ShardRegistryTooManyAssignments(msg.sender, uint32(held));
        if (byModel.length >= MAX_LIVE_PER_MODEL) revert ShardRegistryModelFull(modelId, byModel.length);
        // No cast truncates: end <= numLayers < 2**16, modelId <= _modelCount, the lists are bounded.
        _assignments.push(
            AssignmentRecord(
                msg.sender,
                uint16(start),
                uint16(end),
                true,
                uint56(modelId),
                uint32(byNode.length),
                uint32(byModel.length),
                uint64(block.number),
                0
            )
        );
        assignmentId = _assignments.length;
        byNode.push(assignmentId);
        byModel.push(assignmentId);
        emit ShardAnnounced(assignmentId, msg.sender, modelId, start, end);
    }

    /// @inheritdoc IShardRegistry
    function releaseShard(uint256 assignmentId) external {
        AssignmentRecord storage a = _assignment(assignmentId);
        if (a.node != msg.sender) revert ShardRegistryNotAssignmentOwner(assignmentId, msg.sender);
        if (!a.live) revert ShardRegistryAssignmentNotLive(assignmentId);
        _release(assignmentId, a);
    }

    // ---------------------------------------------------------------- jobs

    /// @inheritdoc IShardRegistry
    /// @dev The whole `msg.value` is escrowed; what the settlement does not pay out is refunded.
    function submitJob(uint256 modelId, bytes32 inputHash, uint32 maxTokens, address coordinator)
        external
        payable
        returns (uint256 jobId)
    {
        if (maxTokens == 0) revert ShardRegistryZeroAmount();
        if (maxTokens > _maxJobTokens) revert ShardRegistryMaxTokensTooLarge(maxTokens, _maxJobTokens);
        ModelRecord memory model = _model(modelId);
        uint256 required = _quote(model, maxTokens);
        if (msg.value < required) revert ShardRegistryEscrowTooLow(msg.value, required);
        if (msg.value > type(uint88).max) revert ShardRegistryAmountTooLarge(msg.value, type(uint88).max);
        uint64 deadline = uint64(block.timestamp) + _jobTimeout;
        jobId = ++_jobCount;
        JobRecord memory job = JobRecord(
            msg.sender, coordinator, uint64(modelId), maxTokens, deadline, uint128(msg.value), model.numLayers, model.price
        );
        _jobs[jobId] = (uint256(keccak256(abi.encode(jobId, job))) & ~_LOW) | uint8(JobStatus.Open);
        emit JobSubmitted(
            jobId, msg.sender, coordinator, uint64(modelId), inputHash, maxTokens, uint128(msg.value), deadline,
            model.numLayers, model.price
        );
    }

    /// @inheritdoc IShardRegistry
    /// @dev No reentrancy guard: it makes no external call (ecrecover is a precompile) and sends no ether.
    function settleJobs(Settlement[] calldata settlements) external {
        Account memory coordinator = _accounts[msg.sender];
        if (coordinator.flags & _COORDINATOR == 0) revert ShardRegistryNotCoordinator(msg.sender);
        uint256 fees = 0;
        uint256 protocol = 0;
        for (uint256 k = 0; k < settlements.length; ++k) {
            Settlement calldata s = settlements[k];
            if (s.job.coordinator != msg.sender) revert ShardRegistryNotJobCoordinator(s.jobId, msg.sender);
            // a job named this coordinator before its approval took effect: it cannot be settled, only cancelled
            // (deadline - jobTimeout is the submission time; deadline >= jobTimeout by construction)
            if (uint256(coordinator.activeFrom) + _jobTimeout > s.job.deadline) revert ShardRegistryNotCoordinator(msg.sender);
            uint256 slot = _jobs[s.jobId];
            if (uint8(slot) != uint8(JobStatus.Open)) {
                if (slot == 0) revert ShardRegistryUnknownJob(s.jobId);
                continue; // closed meanwhile (e.g. cancelled after the deadline): nothing left to settle
            }
            if (slot & ~_LOW != _settlementRecordHash(s) & ~_LOW) revert ShardRegistryJobRecordMismatch(s.jobId);
            (uint256 remaining, uint256 paid, uint16 paidHops) = _payHops(s, slot & _HAS_POSTS != 0);
            uint256 fee;
            uint256 cut;
            // cannot overflow: paid, fee and cut are at most the job's escrow (< 2**88), taken from `remaining`
            unchecked {
                fee = _take((paid * _coordinatorFeeBps) / _BPS, remaining);
                remaining -= fee;
                cut = _take((paid * _protocolFeeBps) / _BPS, remaining);
                remaining -= cut;
                fees += fee;
                protocol += cut;
            }
            _close(s.jobId, slot, JobStatus.Settled);
            _credit(s.job.client, remaining);
            emit JobSettled(s.jobId, s.outputHash, paid, fee, remaining, paidHops);
        }
        if (fees != 0) _credit(msg.sender, fees);
        if (protocol != 0) _protocolFees += protocol;
    }

    /// @inheritdoc IShardRegistry
    function postCommitment(
        uint256 jobId,
        JobRecord calldata job,
        SignedCommitment calldata c,
        TicketProof calldata ticket
    ) external {
        if (c.node != msg.sender) revert ShardRegistryNotHopNode(jobId, msg.sender);
        uint256 slot = _openJob(jobId, job);
        if (block.timestamp > job.deadline) revert ShardRegistryPostWindowClosed(jobId, job.deadline);
        if (block.timestamp > uint256(ticket.expiresAt) + _disputeWindow) {
            revert ShardRegistryTicketExpired(jobId, ticket.expiresAt);
        }
        bytes32 ticketDigest = _hashTypedDataV4(
            ShardEvidence.ticketHash(
                msg.sender, ticket.sessionId, jobId, c.start, c.end, ticket.maxPositions, ticket.expiresAt
            )
        );
        (address signer, , ) = ECDSA.tryRecover(ticketDigest, ticket.r, ticket.vs);
        if (signer != job.coordinator) revert ShardRegistryBadTicket(jobId, msg.sender);
        if (c.positions > ticket.maxPositions) {
            revert ShardRegistryPositionsTooHigh(jobId, 0, c.positions, ticket.maxPositions);
        }
        _checkHop(jobId, job, c, 0);
        _reservePosted(jobId, job, c, slot);
    }

    /// @dev Reserves a node's own posted commitment's pay from the escrow, provisionally for `disputeWindow`
    /// seconds (the job's coordinator's settlement of the same hop replaces it until then), and marks the job as
    /// having posts. Posts of different nodes may overlap (a failover's replacement serves the same layers): each
    /// needs its own ticket from the job's coordinator.
    function _reservePosted(uint256 jobId, JobRecord calldata job, SignedCommitment calldata c, uint256 slot) private {
        bytes32 key = keccak256(abi.encode(jobId, c.node, c.start, c.end));
        if (_postedHop[key] != 0) revert ShardRegistryAlreadyCommitted(jobId, c.node);
        Posted storage posted = _posted[jobId];
        uint256 count = posted.count;
        if (count >= MAX_HOPS) revert ShardRegistryTooManyHops(jobId, count + 1, MAX_HOPS);
        Account storage account = _accounts[c.node];
        if (account.flags & _JAILED != 0) revert ShardRegistryNodeJailed(c.node);
        if (account.stake < _minStake) revert ShardRegistryInsufficientStake(account.stake, _minStake);
        uint256 pay = _take(_hopPay(job, c), job.escrow - posted.paid);
        uint64 payableAt = uint64(block.timestamp + _disputeWindow);
        _postedHop[key] = pay | (uint256(payableAt) << 128) | (_POST_PENDING << 192);
        posted.paid += uint88(pay); // cannot overflow: at most the escrow (< 2**88)
        posted.count = uint8(count + 1);
        posted.client = job.client;
        _pendingPosted += pay;
        _jobs[jobId] = slot | _HAS_POSTS;
        account.bondedUntil = uint40(block.timestamp + _disputeWindow);
        emit CommitmentPosted(jobId, c.node, c.start, c.end, c.positions, c.steps, c.root, pay, payableAt);
    }

    /// @inheritdoc IShardRegistry
    function collectPosted(uint256 jobId, address node, uint32 start, uint32 end) external {
        bytes32 key = keccak256(abi.encode(jobId, node, start, end));
        uint256 record = _postedHop[key];
        if (record >> 192 != _POST_PENDING) revert ShardRegistryNothingToCollect(jobId, node);
        uint64 payableAt = uint64(record >> 128);
        if (block.timestamp < payableAt) revert ShardRegistryPostProvisional(jobId, node, payableAt);
        uint256 amount = uint128(record);
        _postedHop[key] = (record & ((1 << 192) - 1)) | (_POST_PAID << 192);
        _pendingPosted -= amount;
        // committed work is paid even if the node left since; a node jailed since (slashed) forfeits it to the client
        address to = node;
        Account storage account = _accounts[node];
        if (account.flags & _JAILED != 0) {
            to = _posted[jobId].client;
        } else {
            account.bondedUntil = uint40(block.timestamp + _disputeWindow);
        }
        _credit(to, amount);
        emit PostedCommitmentPaid(jobId, node, start, end, to, amount);
    }

    /// @inheritdoc IShardRegistry
    function failJob(uint256 jobId, JobRecord calldata job, string calldata reason) external {
        _checkString("reason", reason);
        if (job.coordinator != msg.sender) revert ShardRegistryNotJobCoordinator(jobId, msg.sender);
        uint256 refund = _closeWithRefund(jobId, job, JobStatus.Failed);
        emit JobFailed(jobId, reason, refund);
    }

    /// @inheritdoc IShardRegistry
    function cancelJob(uint256 jobId, JobRecord calldata job) external {
        _openJob(jobId, job);
        bool revoked = _accounts[job.coordinator].flags & _COORDINATOR == 0;
        if (job.client != msg.sender && !revoked) revert ShardRegistryNotJobClient(jobId, msg.sender);
        if (block.timestamp <= job.deadline) revert ShardRegistryDeadlineNotReached(jobId, job.deadline);
        uint256 refund = _closeWithRefund(jobId, job, JobStatus.Cancelled);
        emit JobCancelled(jobId, msg.sender, refund);
    }

    // ---------------------------------------------------------------- slashing and payouts

    /// @inheritdoc IShardRegistry
    function slash(SlashEvidence calldata e) external {
        SignedCommitment calldata c = e.commitment;
        bytes32 key = keccak256(abi.encode(e.jobId, c.node));
        if (_slashed[key]) revert ShardRegistryAlreadySlashed(e.jobId, c.node);
        _checkClosed(e.jobId, e.job, e.closeBlock);
        _checkSignature(e.jobId, c, 0);
        if (!ShardEvidence.verifyMerkle(e.leaf, e.proof, c.root, e.leafIndex, c.steps)) {
            revert ShardRegistryBadMerkleProof(e.jobId, e.leafIndex);
        }
        (address[] memory drawn, uint256[] memory stakes) =
            _draw(e.jobId, e.job.modelId, e.closeBlock, c.node, c.start, c.end, c.root);
        if (drawn.length < MIN_VERIFIERS) revert ShardRegistryNotEnoughVerifiers(drawn.length, MIN_VERIFIERS);
        (uint256 guilty, uint256 total) = _countVerdicts(e, drawn, stakes);
        if (guilty * 2 <= total) revert ShardRegistryNoMajority(guilty, total);
        _slashed[key] = true;
        uint256 amount = _takeStake(c.node);
        _credit(e.job.client, amount);
        emit NodeSlashed(c.node, e.jobId, e.job.client, amount, c.root, e.leafIndex, guilty, total);
    }

    /// @inheritdoc IShardRegistry
    /// @dev Checks, effects, event, then the transfer; reverts with {ShardRegistryTransferFailed} if the
    /// recipient refuses the ether (the balance then stays claimable).
    function claim() external nonReentrant {
        Account storage account = _accounts[msg.sender];
        uint256 amount = account.claimable;
        if (amount == 0) revert ShardRegistryNothingToClaim(msg.sender);
        account.claimable = 0;
        emit Claimed(msg.sender, amount);
        (bool ok, ) = payable(msg.sender).call{value: amount}("");
        if (!ok) revert ShardRegistryTransferFailed(msg.sender, amount);
    }

    // ---------------------------------------------------------------- views

    function minStake() external view returns (uint256) {
        return _minStake;
    }

    function unbondingPeriod() external view returns (uint64) {
        return _unbondingPeriod;
    }

    function jobTimeout() external view returns (uint64) {
        return _jobTimeout;
    }

    function coordinatorFeeBps() external view returns (uint16) {
        return _coordinatorFeeBps;
    }

    function slashBps() external view returns (uint16) {
        return _slashBps;
    }

    function maxPromptTokens() external view returns (uint32) {
        return _maxPromptTokens;
    }

    function approvalDelay() external view returns (uint64) {
        return _approvalDelay;
    }

    function disputeWindow() external view returns (uint64) {
        return _disputeWindow;
    }

    function protocolFeeBps() external view returns (uint16) {
        return _protocolFeeBps;
    }

    function maxJobTokens() external view returns (uint32) {
        return _maxJobTokens;
    }

    /// @inheritdoc IShardRegistry
    function isCoordinator(address account) external view returns (bool) {
        Account storage a = _accounts[account];
        return a.flags & _COORDINATOR != 0 && block.timestamp >= a.activeFrom;
    }

    /// @inheritdoc IShardRegistry
    function coordinatorInfo(address account) external view returns (string memory, uint64) {
        Account storage a = _accounts[account];
        return (_coordinatorEndpoints[account], a.flags & _COORDINATOR != 0 ? a.activeFrom : 0);
    }

    /// @notice The node's record; all fields zero (`registered == false`) for an unknown address.
    function getNode(address node) external view returns (Node memory) {
        Account storage a = _accounts[node];
        NodeExtra storage x = _nodeExtra[node];
        return Node(
            x.endpoint, a.stake, x.unbonding, x.unbondingUntil, a.bondedUntil, uint32(_nodeLive[node].length),
            a.flags & _REGISTERED != 0, a.flags & _JAILED != 0
        );
    }

    function getModel(uint256 modelId) external view returns (Model memory) {
        ModelRecord storage m = _model(modelId);
        string[2] storage text = _modelText[modelId];
        return Model(text[0], text[1], m.numLayers, m.price, m.owner);
    }

    function modelCount() external view returns (uint256) {
        return _modelCount;
    }

    function getAssignment(uint256 assignmentId) external view returns (Assignment memory) {
        AssignmentRecord storage a = _assignment(assignmentId);
        return Assignment(a.node, a.modelId, a.start, a.end, a.live);
    }

    function assignmentCount() external view returns (uint256) {
        return _assignments.length;
    }

    /// @inheritdoc IShardRegistry
    function liveAssignments(uint256 modelId) external view returns (uint256[] memory) {
        _model(modelId);
        uint256[] storage listed = _modelLive[modelId];
        uint256[] memory live = new uint256[](listed.length);
        uint256 count = 0;
        for (uint256 i = 0; i < listed.length; ++i) {
            if (_assignments[listed[i] - 1].live) live[count++] = listed[i];
        }
        assembly ("memory-safe") {
            mstore(live, count)
        }
        return live;
    }

    /// @inheritdoc IShardRegistry
    function jobState(uint256 jobId) external view returns (JobStatus, uint256, uint256) {
        uint256 slot = _jobs[jobId];
        if (slot == 0) revert ShardRegistryUnknownJob(jobId);
        Posted storage p = _posted[jobId];
        return (JobStatus(uint8(slot)), p.paid, p.count);
    }

    /// @inheritdoc IShardRegistry
    function postedCommitment(uint256 jobId, address node, uint32 start, uint32 end)
        external
        view
        returns (uint256 amount, uint64 payableAt, uint8 state)
    {
        uint256 record = _postedHop[keccak256(abi.encode(jobId, node, start, end))];
        return (uint128(record), uint64(record >> 128), uint8(record >> 192));
    }

    /// @inheritdoc IShardRegistry
    function pendingPosted() external view returns (uint256) {
        return _pendingPosted;
    }

    function jobCount() external view returns (uint256) {
        return _jobCount;
    }

    /// @inheritdoc IShardRegistry
    function jobRecordHash(uint256 jobId, JobRecord calldata job) external pure returns (bytes32) {
        return keccak256(abi.encode(jobId, job));
    }

    /// @inheritdoc IShardRegistry
    function quote(uint256 modelId, uint32 maxTokens) external view returns (uint256) {
        return _quote(_model(modelId), maxTokens);
    }

    function _quote(ModelRecord memory model, uint32 maxTokens) private view returns (uint256) {
        uint256 base = uint256(model.numLayers) * (uint256(maxTokens) + _maxPromptTokens) * model.price;
        return base + (base * _coordinatorFeeBps) / _BPS + (base * _protocolFeeBps) / _BPS;
    }

    /// @inheritdoc IShardRegistry
    function drawVerifiers(
        uint256 jobId,
        JobRecord calldata job,
        uint64 closeBlock,
        address node,
        uint32 start,
        uint32 end,
        bytes32 root
    ) external view returns (address[] memory, uint256[] memory) {
        _checkClosed(jobId, job, closeBlock);
        return _draw(jobId, job.modelId, closeBlock, node, start, end, root);
    }

    function isSlashed(uint256 jobId, address node) external view returns (bool) {
        return _slashed[keccak256(abi.encode(jobId, node))];
    }

    function claimable(address account) external view returns (uint256) {
        return _accounts[account].claimable;
    }

    function totalStaked() external view returns (uint256) {
        return _totalStaked;
    }

    function totalUnbonding() external view returns (uint256) {
        return _totalUnbonding;
    }

    function protocolFees() external view returns (uint256) {
        return _protocolFees;
    }

    // ---------------------------------------------------------------- internal: jobs

    /// @dev keccak256(abi.encode(jobId, job)) straight from the settlement's calldata, where (jobId, job) are its
    /// first nine words (dirty high bits hash differently, so they can only fail the comparison).
    function _settlementRecordHash(Settlement calldata s) private pure returns (uint256 h) {
        assembly ("memory-safe") {
            let m := mload(0x40)
            calldatacopy(m, s, 0x120)
            h := keccak256(m, 0x120)
        }
    }

    /// @dev Pays the hops of one settlement; returns the escrow left, what the nodes got and the paid-hop mask.
    function _payHops(Settlement calldata s, bool hasPosts)
        private
        returns (uint256 remaining, uint256 paid, uint16 paidHops)
    {
        uint256 n = s.hops.length;
        if (n > MAX_HOPS) revert ShardRegistryTooManyHops(s.jobId, n, MAX_HOPS);
        remaining = s.job.escrow;
        if (hasPosts) remaining -= _posted[s.jobId].paid;
        uint256 previousEnd = 0;
        uint256 maximum = uint256(s.job.maxTokens) + _maxPromptTokens;
        uint256 numLayers = s.job.numLayers;
        uint256 price = s.job.price;
        bytes32 domainSeparator = _domainSeparatorV4();
        for (uint256 i = 0; i < n; ++i) {
            SignedCommitment calldata c = s.hops[i];
            address node = c.node;
            uint256 start = c.start;
            uint256 end = c.end;
            // disjoint spans in layer order: no layer is paid twice, no hop appears twice
            if (start < previousEnd) revert ShardRegistryHopsNotSorted(s.jobId, i);
            if (start >= end || end > numLayers) revert ShardRegistryInvalidHopSpan(s.jobId, i, c.start, c.end);
            previousEnd = end;
            uint256 positions = c.positions;
            if (positions > maximum) revert ShardRegistryPositionsTooHigh(s.jobId, i, positions, maximum);
            if (node == address(0) || _commitmentSigner(domainSeparator, s.jobId, c) != node) {
                revert ShardRegistryBadCommitmentSignature(s.jobId, i, node);
            }
            bool voided = false;
            if (hasPosts) {
                (bool final_, bool wasPending, uint256 back) = _voidPosted(s.jobId, node, start, end);
                if (final_) continue; // the node's own post pays this hop
                remaining += back;
                voided = wasPending;
            }
            uint256 pay;
            // cannot overflow: positions < 2**32, end - start < 2**32 (checked above), price < 2**80; pay <= remaining
            // <= escrow < 2**88, so paid <= escrow too; i < MAX_HOPS
            unchecked {
                pay = positions * (end - start) * price;
                if (pay > remaining) pay = remaining;
            }
            if (!_payHop(node, pay)) {
                // jailed, unregistered or unstaked since: the share goes back, unless the node posted this hop and
                // is not jailed (its post, now replaced, would have paid it: committed work is paid; it stays
                // bonded until the post's payableAt, which is after now)
                if (!voided || _accounts[node].flags & _JAILED != 0) continue;
                _credit(node, pay);
            }
            unchecked {
                remaining -= pay;
                paid += pay;
                paidHops |= uint16(1 << i);
            }
        }
    }

    /// @dev For a settled hop the node also posted: a provisional post is voided (`voided`; its reserve comes back:
    /// `back`) and the settlement pays the hop; a post past its window (or paid) stands and the hop is skipped (`final_`).
    function _voidPosted(uint256 jobId, address node, uint256 start, uint256 end)
        private
        returns (bool final_, bool voided, uint256 back)
    {
        bytes32 key = keccak256(abi.encode(jobId, node, start, end));
        uint256 record = _postedHop[key];
        if (record == 0) return (false, false, 0);
        if (record >> 192 != _POST_PENDING || block.timestamp >= uint64(record >> 128)) return (true, false, 0);
        voided = true;
        back = uint128(record);
        _postedHop[key] = (record & ((1 << 192) - 1)) | (_POST_VOIDED << 192);
        _posted[jobId].paid -= uint88(back);
        _pendingPosted -= back;
        emit PostedCommitmentVoided(jobId, node, uint32(start), uint32(end), back);
    }

    /// @dev Credits `pay` to a registered, unjailed node staked at least `minStake` and keeps its stake bonded for
    /// the dispute window, with one read and one write of its {Account} slot; false (nothing done) for another node.
    /// Layout of the slot (Solidity packs from the low bits): claimable 0-87, stake 88-175, bondedUntil 176-215,
    /// activeFrom 216-247, flags 248-255.
    function _payHop(address node, uint256 pay) private returns (bool) {
        uint256 slot;
        uint256 word;
        assembly ("memory-safe") {
            mstore(0, node)
            mstore(0x20, _accounts.slot)
            slot := keccak256(0, 0x40)
            word := sload(slot)
        }
        uint256 mask88 = (1 << 88) - 1;
        if ((word >> 248) & (_JAILED | _REGISTERED) != _REGISTERED || (word >> 88) & mask88 < _minStake) return false;
        uint256 claimableNow = (word & mask88) + pay;
        if (claimableNow > mask88) revert ShardRegistryAmountTooLarge(claimableNow, mask88);
        uint256 bonded = block.timestamp + _disputeWindow; // < 2**40 for millennia: the constructor bounds the window
        word = (word & ~(mask88 | (((1 << 40) - 1) << 176))) | claimableNow | (bonded << 176);
        assembly ("memory-safe") {
            sstore(slot, word)
        }
        return true;
    }

    /// @dev Reverts unless the hop's span lies in the model, its positions are in bounds, and the node signed it.
    function _checkHop(uint256 jobId, JobRecord calldata job, SignedCommitment calldata c, uint256 i) private view {
        if (c.start >= c.end || c.end > job.numLayers) revert ShardRegistryInvalidHopSpan(jobId, i, c.start, c.end);
        uint256 maximum = uint256(job.maxTokens) + _maxPromptTokens;
        if (c.positions > maximum) revert ShardRegistryPositionsTooHigh(jobId, i, c.positions, maximum);
        _checkSignature(jobId, c, i);
    }

    function _checkSignature(uint256 jobId, SignedCommitment calldata c, uint256 i) private view {
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
        private
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

    function _hopPay(JobRecord calldata job, SignedCommitment calldata c) private pure returns (uint256) {
        return uint256(c.positions) * (c.end - c.start) * job.price;
    }

    function _openJob(uint256 jobId, JobRecord calldata job) private view returns (uint256 slot) {
        slot = _jobs[jobId];
        if (slot == 0) revert ShardRegistryUnknownJob(jobId);
        if (uint8(slot) != uint8(JobStatus.Open)) revert ShardRegistryInvalidJobStatus(jobId, JobStatus(uint8(slot)));
        if (slot & ~_LOW != uint256(keccak256(abi.encode(jobId, job))) & ~_LOW) revert ShardRegistryJobRecordMismatch(jobId);
    }

    /// @dev Marks the job closed in this block: the stored hash then also covers the block number.
    function _close(uint256 jobId, uint256 slot, JobStatus status) private {
        _jobs[jobId] = _closedHash(slot, block.number) | uint8(status);
    }

    /// @dev keccak256(abi.encode(slot & ~_LOW, closeBlock)) & ~_LOW, hashed in scratch space.
    function _closedHash(uint256 slot, uint256 closeBlock) private pure returns (uint256 h) {
        uint256 open = slot & ~_LOW;
        assembly ("memory-safe") {
            mstore(0, open)
            mstore(0x20, closeBlock)
            h := keccak256(0, 0x40)
        }
        h &= ~_LOW;
    }

    function _checkClosed(uint256 jobId, JobRecord calldata job, uint64 closeBlock) private view {
        uint256 slot = _jobs[jobId];
        if (slot == 0) revert ShardRegistryUnknownJob(jobId);
        uint8 status = uint8(slot);
        if (status == uint8(JobStatus.Open)) revert ShardRegistryJobNotClosed(jobId);
        uint256 open = uint256(keccak256(abi.encode(jobId, job)));
        if (slot & ~_LOW != _closedHash(open, closeBlock)) revert ShardRegistryJobRecordMismatch(jobId);
    }

    function _closeWithRefund(uint256 jobId, JobRecord calldata job, JobStatus status) private returns (uint256 refund) {
        uint256 slot = _openJob(jobId, job);
        refund = job.escrow;
        if (slot & _HAS_POSTS != 0) refund -= _posted[jobId].paid;
        _close(jobId, slot, status);
        _credit(job.client, refund);
    }

    // ---------------------------------------------------------------- internal: slashing

    /// @dev The candidates: distinct nodes other than `accused` that held, at the end of block `closeBlock`, an
    /// assignment of the model covering [start, end) (announced by then, not released by then), weighted by their
    /// stake + unbonding stake at that block; drawn from blockhash(closeBlock + DRAW_DELAY). Nothing done once the
    /// randomness is public (stake moves, releases, jails, new nodes) adds, removes or reweighs a candidate.
    function _draw(
        uint256 jobId,
        uint64 modelId,
        uint64 closeBlock,
        address accused,
        uint32 start,
        uint32 end,
        bytes32 root
    ) private view returns (address[] memory, uint256[] memory) {
        uint256 at = uint256(closeBlock) + DRAW_DELAY;
        bytes32 randomness = at < block.number ? blockhash(at) : bytes32(0);
        if (randomness == bytes32(0)) revert ShardRegistryRandomnessUnavailable(at);
        uint256[] storage live = _modelLive[modelId];
        address[] memory candidates = new address[](live.length);
        uint256[] memory stakes = new uint256[](live.length);
        uint256 count = 0;
        for (uint256 i = 0; i < live.length; ++i) {
            AssignmentRecord storage a = _assignments[live[i] - 1];
            // only what was bonded when the job closed: the randomness is public two blocks later
            if (a.node == accused || a.start > start || a.end < end || a.announcedAt > closeBlock) continue;
            if (!a.live && a.releasedAt <= closeBlock) continue; // released before the close
            uint256 weight = _weightAt(a.node, closeBlock);
            if (weight == 0 || _uncountedIndex(candidates, a.node, 0) < count) continue; // a node counts once
            candidates[count] = a.node;
            stakes[count] = weight;
            ++count;
        }
        bytes32 seed = keccak256(abi.encode(randomness, jobId, accused, root));
        return ShardEvidence.draw(candidates, stakes, count, MAX_VERIFIERS, seed);
    }

    /// @dev Checkpoints a node's stake + unbonding stake (its weight in draws of jobs closed from this block on).
    function _recordWeight(address node, uint256 weight) private {
        uint256[] storage history = _weights[node];
        uint256 entry = (block.number << 208) | weight; // weight < 2**89, block numbers < 2**48
        uint256 n = history.length;
        if (n != 0 && history[n - 1] >> 208 == block.number) history[n - 1] = entry;
        else history.push(entry);
    }

    /// @dev A node's stake + unbonding stake at the end of block `at` (0 before it registered): a binary search.
    function _weightAt(address node, uint256 at) private view returns (uint256) {
        uint256[] storage history = _weights[node];
        uint256 low = 0;
        uint256 high = history.length;
        while (low < high) {
            uint256 mid = (low + high) / 2;
            if (history[mid] >> 208 > at) high = mid;
            else low = mid + 1;
        }
        return low == 0 ? 0 : uint208(history[low - 1]);
    }

    /// @dev Drops from a model's list the assignments released more than _DRAW_REACH blocks ago.
    function _prune(uint256[] storage byModel) private {
        uint256 i = 0;
        while (i < byModel.length) {
            AssignmentRecord storage a = _assignments[byModel[i] - 1];
            if (a.live || block.number < a.releasedAt + _DRAW_REACH) {
                ++i;
                continue;
            }
            uint256 movedId = byModel[byModel.length - 1];
            byModel[i] = movedId;
            _assignments[movedId - 1].modelIndex = uint32(i);
            byModel.pop();
        }
    }

    /// @dev Stake of the drawn verifiers that signed the verdict (each counted once) and of all drawn verifiers.
    function _countVerdicts(SlashEvidence calldata e, address[] memory drawn, uint256[] memory stakes)
        private
        view
        returns (uint256 guilty, uint256 total)
    {
        total = _sum(stakes);
        bytes32 digest = _hashTypedDataV4(
            ShardEvidence.verdictHash(e.jobId, e.commitment.node, e.commitment.root, e.leafIndex, e.leaf)
        );
        uint256 counted = 0; // bit j: drawn[j] already counted
        for (uint256 i = 0; i < e.verdicts.length && i < MAX_VERIFIERS; ++i) {
            uint256 j = _drawnSigner(digest, e.verdicts[i], drawn, counted, i);
            counted |= 1 << j;
            guilty += stakes[j];
        }
    }

    /// @dev The index in `drawn` of verdict `i`'s signer, not counted before; reverts for anyone else.
    function _drawnSigner(
        bytes32 digest,
        VerdictSignature calldata verdict,
        address[] memory drawn,
        uint256 counted,
        uint256 i
    ) private pure returns (uint256 j) {
        (address signer, , ) = ECDSA.tryRecover(digest, verdict.r, verdict.vs);
        j = _uncountedIndex(drawn, signer, counted);
        if (j == drawn.length || signer == address(0)) revert ShardRegistryVerdictNotFromDrawnVerifier(i, signer);
    }

    function _sum(uint256[] memory values) private pure returns (uint256 total) {
        for (uint256 k = 0; k < values.length; ++k) total += values[k];
    }

    /// @dev The index of `signer` among `drawn` not yet marked in `counted`, or drawn.length.
    function _uncountedIndex(address[] memory drawn, address signer, uint256 counted) private pure returns (uint256 j) {
        while (j < drawn.length && (drawn[j] != signer || counted & (1 << j) != 0)) ++j;
    }

    /// @dev Takes `slashBps` of the node's stake and unbonding stake, jails it for good, releases its assignments.
    function _takeStake(address node) private returns (uint256 amount) {
        Account storage account = _accounts[node];
        NodeExtra storage extra = _nodeExtra[node];
        uint256 fromStake = (uint256(account.stake) * _slashBps) / _BPS;
        uint256 fromUnbonding = (uint256(extra.unbonding) * _slashBps) / _BPS;
        account.stake -= uint88(fromStake);
        extra.unbonding -= uint128(fromUnbonding);
        account.flags |= _JAILED;
        _recordWeight(node, uint256(account.stake) + extra.unbonding);
        _totalStaked -= uint128(fromStake);
        _totalUnbonding -= uint128(fromUnbonding);
        uint256[] storage live = _nodeLive[node];
        while (live.length != 0) {
            uint256 id = live[live.length - 1];
            _release(id, _assignments[id - 1]);
        }
        amount = fromStake + fromUnbonding;
    }

    // ---------------------------------------------------------------- internal: helpers

    function _registered(address who) private view returns (Account storage account) {
        account = _accounts[who];
        if (account.flags & _REGISTERED == 0) revert ShardRegistryNotRegistered(who);
    }

    function _model(uint256 modelId) private view returns (ModelRecord storage) {
        ModelRecord storage model = _models[modelId]; // one slot read: a registered model has numLayers >= 1
        if (model.numLayers == 0) revert ShardRegistryUnknownModel(modelId);
        return model;
    }

    function _assignment(uint256 assignmentId) private view returns (AssignmentRecord storage) {
        if (assignmentId == 0 || assignmentId > _assignments.length) revert ShardRegistryUnknownAssignment(assignmentId);
        return _assignments[assignmentId - 1];
    }

    function _checkString(string memory field, string calldata value) private pure {
        if (bytes(value).length > MAX_STRING) revert ShardRegistryStringTooLong(field, bytes(value).length, MAX_STRING);
    }

    function _checkedStake(uint256 stake) private pure returns (uint256) {
        if (stake > type(uint88).max) revert ShardRegistryAmountTooLarge(stake, type(uint88).max);
        return stake;
    }

    function _take(uint256 wanted, uint256 available) private pure returns (uint256) {
        return wanted < available ? wanted : available;
    }

    /// @dev Adds to a claimable balance.
    function _credit(address account, uint256 amount) private {
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
    function _release(uint256 assignmentId, AssignmentRecord storage a) private {
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
}
