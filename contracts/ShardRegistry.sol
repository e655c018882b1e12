// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {IShardRegistry} from "./IShardRegistry.sol";
import {ShardDisputes} from "./ShardDisputes.sol";
import {ShardRegistryBase} from "./ShardRegistryBase.sol";
import {AssignmentRecord} from "./ShardEvidence.sol";

/// @title ShardRegistry (protocol v2)
/// @notice See {IShardRegistry} and docs/PROTOCOL.md.
/// @dev Ids of models, assignments and jobs start at 1. A job is stored as one slot: the hash of its
/// {JobRecord} (high 240 bits), flags (bit 8: has posted commitments; once settled, bit 9: its verification share
/// is held, bit 10: spent) and its status (low 8 bits); once closed, the hash also covers the closing block. Ether
/// leaves only through {claim}. State and shared helpers: {ShardRegistryBase}; posted commitments, slashing and
/// paid verification run in {ShardDisputes}, which this contract deploys and reaches by DELEGATECALL (room under
/// the EIP-170 code size limit).
/// Invariant: see {IShardRegistry} (balance == stakes + unbonding + open escrow + held verification + claimable +
/// protocol fees).
contract ShardRegistry is IShardRegistry, ShardRegistryBase, ReentrancyGuardTransient {
    /// @notice The {ShardDisputes} this registry deployed and forwards to.
    address public immutable disputes;

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
    )
        ShardRegistryBase(
            minStake_, unbondingPeriod_, jobTimeout_, coordinatorFeeBps_, slashBps_, maxPromptTokens_, approvalDelay_,
            disputeWindow_, protocolFeeBps_, maxJobTokens_, verifyBps_
        )
    {
        disputes = address(
            new ShardDisputes(
                minStake_, unbondingPeriod_, jobTimeout_, coordinatorFeeBps_, slashBps_, maxPromptTokens_, approvalDelay_,
                disputeWindow_, protocolFeeBps_, maxJobTokens_, verifyBps_
            )
        );
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
            // the verification share of the largest job the record allows: what its verdicts can earn at most
            uint256 flags = uint8(JobStatus.Settled);
            uint256 share = _verificationShare(s.job);
            if (share != 0 && share <= remaining) {
                unchecked {
                    remaining -= share;
                }
                flags |= _VERIFY_HELD;
            }
            _jobs[s.jobId] = _closedHash(slot, block.number) | flags;
            _credit(s.job.client, remaining);
            emit JobSettled(s.jobId, s.outputHash, paid, fee, remaining, paidHops);
        }
        if (fees != 0) _credit(msg.sender, fees);
        if (protocol != 0) _protocolFees += protocol;
    }




    /// @inheritdoc IShardRegistry
    /// @dev Runs in {ShardDisputes} (DELEGATECALL).
    function postCommitment(uint256, JobRecord calldata, SignedCommitment calldata, TicketProof calldata) external {
        _forward();
    }

    /// @inheritdoc IShardRegistry
    /// @dev Runs in {ShardDisputes} (DELEGATECALL).
    function collectPosted(uint256, address, uint32, uint32) external {
        _forward();
    }

    /// @inheritdoc IShardRegistry
    /// @dev Runs in {ShardDisputes} (DELEGATECALL).
    function slash(SlashEvidence calldata) external {
        _forward();
    }

    /// @inheritdoc IShardRegistry
    /// @dev Runs in {ShardDisputes} (DELEGATECALL).
    function payVerifiers(VerificationPayment[] calldata) external {
        _forward();
    }

    /// @inheritdoc IShardRegistry
    /// @dev Runs in {ShardDisputes} (DELEGATECALL).
    function refundVerification(uint256, JobRecord calldata, uint64) external {
        _forward();
    }

    /// @dev Runs this call's calldata in {ShardDisputes} on this contract's storage and returns or reverts with its
    /// return data (its custom errors are this interface's).
    function _forward() private {
        address target = disputes;
        assembly ("memory-safe") {
            let m := mload(0x40)
            calldatacopy(m, 0, calldatasize())
            let ok := delegatecall(gas(), target, m, calldatasize(), 0, 0)
            returndatacopy(m, 0, returndatasize())
            if iszero(ok) { revert(m, returndatasize()) }
            return(m, returndatasize())
        }
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

    function verifyBps() external view returns (uint16) {
        return _verifyBps;
    }

    /// @inheritdoc IShardRegistry
    function verificationState(uint256 jobId) external view returns (bool, bool) {
        uint256 slot = _jobs[jobId];
        return (slot & _VERIFY_HELD != 0, slot & (_VERIFY_HELD | _VERIFY_SPENT) == _VERIFY_HELD);
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
        return base + (base * _coordinatorFeeBps) / _BPS + (base * _protocolFeeBps) / _BPS
            + (base * _verifyBps * HELD_VERDICTS) / _BPS;
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
        return _draw(jobId, job.modelId, closeBlock, node, start, end, root, MAX_VERIFIERS);
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






    /// @dev Marks the job closed in this block: the stored hash then also covers the block number.
    function _close(uint256 jobId, uint256 slot, JobStatus status) private {
        _jobs[jobId] = _closedHash(slot, block.number) | uint8(status);
    }



    function _closeWithRefund(uint256 jobId, JobRecord calldata job, JobStatus status) private returns (uint256 refund) {
        uint256 slot = _openJob(jobId, job);
        refund = job.escrow;
        if (slot & _HAS_POSTS != 0) refund -= _posted[jobId].paid;
        _close(jobId, slot, status);
        _credit(job.client, refund);
    }

    // ---------------------------------------------------------------- internal: paid verification




    // ---------------------------------------------------------------- internal: slashing



    /// @dev Drops from a model's list the assignments released more than _DRAW_REACH blocks ago, keeping the order
    /// of the rest (ascending ids): a draw walks its candidates in list order, so moving one (swap-and-pop) would
    /// redraw the disputes of jobs whose randomness is already public. None of those is dropped: a job within
    /// reach closed less than _DRAW_REACH blocks ago, so its candidates were live or released after its close.
    function _prune(uint256[] storage byModel) private {
        uint256 n = byModel.length;
        uint256 kept = 0;
        for (uint256 i = 0; i < n; ++i) {
            uint256 id = byModel[i];
            AssignmentRecord storage a = _assignments[id - 1];
            if (!a.live && block.number >= a.releasedAt + _DRAW_REACH) continue;
            if (kept != i) byModel[kept] = id;
            ++kept;
        }
        while (byModel.length > kept) byModel.pop();
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



}
