// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {IShardRegistry} from "./IShardRegistry.sol";

/// @title ShardRegistry
/// @notice The on-chain registry of shardnet: node stakes, models, shard assignments, paid jobs with
/// escrow, commitments, settlement into claimable balances and slashing. See {IShardRegistry}.
/// @dev Ids of models, assignments and jobs start at 1, so 0 always means "none" (e.g. the `jobId` of a
/// slash that is not about a job). Ether leaves the contract only through {claim}: settlements, unbonded
/// stake and protocol fees are first credited to claimable balances (pull payments).
/// Invariant: address(this).balance == totalStaked + totalUnbonding + totalEscrow + totalClaimable + protocolFees
/// (ether forced in by `selfdestruct` or as a block reward can only make the balance larger).
contract ShardRegistry is IShardRegistry {
    /// @dev The constructor was given a parameter outside its range.
    error ShardRegistryInvalidParameter(string name);

    /// @dev Storage layout of an assignment: two slots instead of the five that {Assignment} plus two
    /// index mappings would take. `nodeIndex`/`modelIndex` locate the id in the live lists.
    struct AssignmentRecord {
        address node; // slot 0
        uint32 start;
        uint32 end;
        bool live;
        uint64 modelId; // slot 1
        uint32 nodeIndex;
        uint32 modelIndex;
    }

    /// @dev Storage layout of a job: five slots instead of the seven of {Job}.
    struct JobRecord {
        address client; // slot 0
        uint32 maxTokens;
        uint64 deadline;
        address coordinator; // slot 1
        JobStatus status;
        uint64 modelId;
        bytes32 inputHash; // slot 2
        uint256 escrow; // slot 3
        bytes32 outputHash; // slot 4
    }

    uint16 private constant _BPS = 10_000;

    address private immutable _owner;
    uint256 private immutable _minStake;
    uint64 private immutable _unbondingPeriod;
    uint64 private immutable _jobTimeout;
    uint16 private immutable _coordinatorFeeBps;
    uint16 private immutable _slashBps;
    uint32 private immutable _maxPromptTokens;

    /// @dev Reentrancy lock, in transient storage (EIP-1153): cleared at the end of every transaction.
    bool private transient _entered;

    mapping(address => bool) private _coordinators;
    mapping(address => string) private _coordinatorEndpoints;

    mapping(address => Node) private _nodes;
    /// @dev Live assignment ids of each node.
    mapping(address => uint256[]) private _nodeLive;

    Model[] private _models; // modelId = index + 1
    AssignmentRecord[] private _assignments; // assignmentId = index + 1
    /// @dev Live assignment ids of each model.
    mapping(uint256 => uint256[]) private _modelLive;

    JobRecord[] private _jobs; // jobId = index + 1
    mapping(uint256 => Hop[]) private _hops;

    mapping(address => uint256) private _claimable;

    uint256 private _totalStaked;
    uint256 private _totalUnbonding;
    uint256 private _totalEscrow;
    uint256 private _totalClaimable;
    uint256 private _protocolFees;

    /// @dev Rejects a call that re-enters any guarded function.
    modifier nonReentrant() {
        if (_entered) revert ShardRegistryReentrantCall();
        _entered = true;
        _;
        _entered = false;
    }

    modifier onlyOwner() {
        if (msg.sender != _owner) revert ShardRegistryUnauthorized(msg.sender);
        _;
    }

    modifier onlyCoordinator() {
        if (!_coordinators[msg.sender]) revert ShardRegistryNotCoordinator(msg.sender);
        _;
    }

    /// @param minStake_ least stake (wei) of a node that serves shards; must be > 0.
    /// @param unbondingPeriod_ seconds between {requestUnstake} and {withdrawStake}.
    /// @param jobTimeout_ seconds after submission until a client may cancel an unfinalized job; must be > 0.
    /// @param coordinatorFeeBps_ coordinator fee, in basis points of what the nodes are paid; at most 10000.
    /// @param slashBps_ share of a node's stake and unbonding stake taken by {slash}, in basis points; at most 10000.
    /// @param maxPromptTokens_ prompt positions a job may use on top of its `maxTokens` (bounds billing).
    constructor(
        uint256 minStake_,
        uint64 unbondingPeriod_,
        uint64 jobTimeout_,
        uint16 coordinatorFeeBps_,
        uint16 slashBps_,
        uint32 maxPromptTokens_
    ) {
        if (minStake_ == 0) revert ShardRegistryInvalidParameter("minStake");
        if (jobTimeout_ == 0) revert ShardRegistryInvalidParameter("jobTimeout");
        if (coordinatorFeeBps_ > _BPS) revert ShardRegistryInvalidParameter("coordinatorFeeBps");
        if (slashBps_ > _BPS) revert ShardRegistryInvalidParameter("slashBps");
        _owner = msg.sender;
        _minStake = minStake_;
        _unbondingPeriod = unbondingPeriod_;
        _jobTimeout = jobTimeout_;
        _coordinatorFeeBps = coordinatorFeeBps_;
        _slashBps = slashBps_;
        _maxPromptTokens = maxPromptTokens_;
    }

    // ---------------------------------------------------------------- governance

    /// @inheritdoc IShardRegistry
    function setCoordinator(address coordinator, string calldata endpoint, bool approved) external onlyOwner {
        _coordinators[coordinator] = approved;
        _coordinatorEndpoints[coordinator] = endpoint;
        emit CoordinatorSet(coordinator, endpoint, approved);
    }

    /// @inheritdoc IShardRegistry
    function withdrawFees(address payable to) external onlyOwner nonReentrant {
        uint256 amount = _protocolFees;
        if (amount == 0) revert ShardRegistryZeroAmount();
        _protocolFees = 0;
        _credit(to, amount);
        emit FeesWithdrawn(to, amount);
    }

    // ---------------------------------------------------------------- nodes

    /// @inheritdoc IShardRegistry
    function registerNode(string calldata endpoint) external payable nonReentrant {
        Node storage node = _nodes[msg.sender];
        if (node.registered) revert ShardRegistryAlreadyRegistered(msg.sender);
        if (msg.value < _minStake) revert ShardRegistryInsufficientStake(msg.value, _minStake);
        node.endpoint = endpoint;
        node.stake = msg.value;
        node.registered = true;
        _totalStaked += msg.value;
        emit NodeRegistered(msg.sender, endpoint, msg.value);
    }

    /// @inheritdoc IShardRegistry
    function updateEndpoint(string calldata endpoint) external {
        Node storage node = _registeredNode(msg.sender);
        node.endpoint = endpoint;
        emit EndpointUpdated(msg.sender, endpoint);
    }

    /// @inheritdoc IShardRegistry
    function addStake() external payable nonReentrant {
        Node storage node = _registeredNode(msg.sender);
        if (msg.value == 0) revert ShardRegistryZeroAmount();
        uint256 newStake = node.stake + msg.value;
        node.stake = newStake;
        if (node.jailed && newStake >= _minStake) node.jailed = false;
        _totalStaked += msg.value;
        emit StakeAdded(msg.sender, msg.value, newStake);
    }

    /// @inheritdoc IShardRegistry
    /// @dev A new request restarts the unbonding period of everything already unbonding.
    function requestUnstake(uint256 amount) external nonReentrant {
        Node storage node = _registeredNode(msg.sender);
        if (amount == 0) revert ShardRegistryZeroAmount();
        uint256 stake = node.stake;
        if (amount > stake) revert ShardRegistryUnstakeTooLarge(amount, stake);
        if (stake - amount < _minStake && node.liveAssignments != 0) {
            revert ShardRegistryHasLiveAssignments(msg.sender, node.liveAssignments);
        }
        uint64 until = uint64(block.timestamp) + _unbondingPeriod;
        node.stake = stake - amount;
        node.unbonding += amount;
        node.unbondingUntil = until;
        _totalStaked -= amount;
        _totalUnbonding += amount;
        emit UnstakeRequested(msg.sender, amount, until);
    }

    /// @inheritdoc IShardRegistry
    /// @dev A deregistered node's record is deleted, so it may register again.
    function withdrawStake() external nonReentrant {
        Node storage node = _registeredNode(msg.sender);
        uint256 amount = node.unbonding;
        if (amount == 0) revert ShardRegistryNothingToWithdraw(msg.sender);
        if (block.timestamp < node.unbondingUntil) revert ShardRegistryStillUnbonding(node.unbondingUntil);
        if (node.openJobs != 0) revert ShardRegistryHasOpenJobs(msg.sender, node.openJobs);
        node.unbonding = 0;
        node.unbondingUntil = 0;
        _totalUnbonding -= amount;
        if (node.stake == 0 && node.liveAssignments == 0) delete _nodes[msg.sender];
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
        if (bytes(name).length == 0) revert ShardRegistryInvalidModel("empty name");
        if (bytes(manifestCid).length == 0) revert ShardRegistryInvalidModel("empty manifestCid");
        if (numLayers == 0) revert ShardRegistryInvalidModel("numLayers must be > 0");
        _models.push(Model(name, manifestCid, numLayers, pricePerLayerToken, msg.sender));
        modelId = _models.length;
        emit ModelRegistered(modelId, msg.sender, name, manifestCid, numLayers, pricePerLayerToken);
    }

    /// @inheritdoc IShardRegistry
    function announceShard(uint256 modelId, uint32 start, uint32 end) external returns (uint256 assignmentId) {
        Node storage node = _registeredNode(msg.sender);
        if (node.jailed) revert ShardRegistryNodeJailed(msg.sender);
        if (node.stake < _minStake) revert ShardRegistryInsufficientStake(node.stake, _minStake);
        Model storage model = _model(modelId);
        if (start >= end || end > model.numLayers) revert ShardRegistryInvalidSpan(start, end, model.numLayers);
        uint256[] storage byNode = _nodeLive[msg.sender];
        uint256[] storage byModel = _modelLive[modelId];
        // The casts cannot truncate: modelId <= _models.length, and a list of 2**32 ids cannot be paid for.
        _assignments.push(
            AssignmentRecord(msg.sender, start, end, true, uint64(modelId), uint32(byNode.length), uint32(byModel.length))
        );
        assignmentId = _assignments.length;
        byNode.push(assignmentId);
        byModel.push(assignmentId);
        node.liveAssignments += 1;
        emit ShardAnnounced(assignmentId, msg.sender, modelId, start, end);
    }

    /// @inheritdoc IShardRegistry
    function releaseShard(uint256 assignmentId) external {
        AssignmentRecord storage assignment = _assignment(assignmentId);
        if (assignment.node != msg.sender) revert ShardRegistryNotAssignmentOwner(assignmentId, msg.sender);
        if (!assignment.live) revert ShardRegistryAssignmentNotLive(assignmentId);
        assignment.live = false;
        _unlist(assignment);
        _nodes[msg.sender].liveAssignments -= 1;
        emit ShardReleased(assignmentId, msg.sender, assignment.modelId);
    }

    // ---------------------------------------------------------------- jobs

    /// @inheritdoc IShardRegistry
    /// @dev The whole `msg.value` is escrowed; what the settlement does not pay out is refunded.
    function submitJob(uint256 modelId, bytes32 inputHash, uint32 maxTokens)
        external
        payable
        nonReentrant
        returns (uint256 jobId)
    {
        if (maxTokens == 0) revert ShardRegistryZeroAmount();
        uint256 required = quote(modelId, maxTokens);
        if (msg.value < required) revert ShardRegistryEscrowTooLow(msg.value, required);
        uint64 deadline = uint64(block.timestamp) + _jobTimeout;
        // uint64(modelId) cannot truncate: quote() checked modelId <= _models.length.
        _jobs.push(
            JobRecord(msg.sender, maxTokens, deadline, address(0), JobStatus.Submitted, uint64(modelId), inputHash, msg.value, 0)
        );
        jobId = _jobs.length;
        _totalEscrow += msg.value;
        emit JobSubmitted(jobId, msg.sender, modelId, inputHash, maxTokens, msg.value, deadline);
    }

    /// @inheritdoc IShardRegistry
    function assignRoute(
        uint256 jobId,
        address[] calldata nodes,
        uint32[] calldata starts,
        uint32[] calldata ends
    ) external onlyCoordinator {
        JobRecord storage job = _job(jobId);
        if (job.status != JobStatus.Submitted) revert ShardRegistryInvalidJobStatus(jobId, job.status);
        if (starts.length != nodes.length) revert ShardRegistryLengthMismatch(nodes.length, starts.length);
        if (ends.length != nodes.length) revert ShardRegistryLengthMismatch(nodes.length, ends.length);
        uint32 numLayers = _models[job.modelId - 1].numLayers;
        uint32 covered = 0;
        for (uint256 i = 0; i < nodes.length; ++i) {
            if (starts[i] != covered) revert ShardRegistryRouteNotCovering(jobId);
            _checkHop(job.modelId, numLayers, nodes[i], starts[i], ends[i]);
            covered = ends[i];
        }
        if (covered != numLayers) revert ShardRegistryRouteNotCovering(jobId);
        job.status = JobStatus.Routed;
        job.coordinator = msg.sender;
        Hop[] storage hops = _hops[jobId];
        for (uint256 i = 0; i < nodes.length; ++i) {
            hops.push(Hop(nodes[i], starts[i], ends[i], bytes32(0)));
            _nodes[nodes[i]].openJobs += 1;
        }
        emit JobRouted(jobId, msg.sender, nodes, starts, ends);
    }

    /// @inheritdoc IShardRegistry
    function addHop(uint256 jobId, address node, uint32 start, uint32 end) external onlyCoordinator {
        JobRecord storage job = _routedJobOf(jobId, msg.sender);
        _checkHop(job.modelId, _models[job.modelId - 1].numLayers, node, start, end);
        Hop[] storage hops = _hops[jobId];
        hops.push(Hop(node, start, end, bytes32(0)));
        _nodes[node].openJobs += 1;
        emit HopAdded(jobId, hops.length - 1, node, start, end);
    }

    /// @inheritdoc IShardRegistry
    /// @dev A node routed on several hops of the job posts once per hop; each post fills its first
    /// hop that has no commitment yet.
    function postCommitment(uint256 jobId, bytes32 commitment) external {
        JobRecord storage job = _job(jobId);
        if (job.status != JobStatus.Routed) revert ShardRegistryInvalidJobStatus(jobId, job.status);
        if (commitment == bytes32(0)) revert ShardRegistryZeroCommitment();
        Hop[] storage hops = _hops[jobId];
        bool routed = false;
        for (uint256 i = 0; i < hops.length; ++i) {
            if (hops[i].node != msg.sender) continue;
            routed = true;
            if (hops[i].commitment == bytes32(0)) {
                hops[i].commitment = commitment;
                emit CommitmentPosted(jobId, msg.sender, i, commitment);
                return;
            }
        }
        if (routed) revert ShardRegistryAlreadyCommitted(jobId, msg.sender);
        revert ShardRegistryNotRoutedNode(jobId, msg.sender);
    }

    /// @inheritdoc IShardRegistry
    function finalizeJob(uint256 jobId, bytes32 outputHash, uint64[] calldata layerTokens)
        external
        onlyCoordinator
        nonReentrant
    {
        JobRecord storage job = _routedJobOf(jobId, msg.sender);
        Hop[] storage hops = _hops[jobId];
        if (layerTokens.length != hops.length) revert ShardRegistryLengthMismatch(hops.length, layerTokens.length);
        uint256 price = _models[job.modelId - 1].pricePerLayerToken;
        uint256 positions = uint256(job.maxTokens) + _maxPromptTokens;
        uint256[] memory pay = new uint256[](hops.length);
        uint256 paidToNodes = 0;
        for (uint256 i = 0; i < hops.length; ++i) {
            uint256 maximum = uint256(hops[i].end - hops[i].start) * positions;
            if (layerTokens[i] > maximum) revert ShardRegistryLayerTokensTooHigh(i, layerTokens[i], maximum);
            if (hops[i].commitment != bytes32(0)) {
                pay[i] = layerTokens[i] * price;
                paidToNodes += pay[i];
            }
        }
        uint256 fee = (paidToNodes * _coordinatorFeeBps) / _BPS;
        uint256 escrow = job.escrow;
        if (paidToNodes + fee > escrow) revert ShardRegistryPayoutExceedsEscrow(paidToNodes + fee, escrow);
        uint256 refund = escrow - paidToNodes - fee;

        job.status = JobStatus.Finalized;
        job.outputHash = outputHash;
        _totalEscrow -= escrow;
        for (uint256 i = 0; i < hops.length; ++i) {
            _nodes[hops[i].node].openJobs -= 1;
            if (pay[i] != 0) _credit(hops[i].node, pay[i]);
        }
        if (fee != 0) _credit(msg.sender, fee);
        if (refund != 0) _credit(job.client, refund);
        emit JobFinalized(jobId, outputHash, paidToNodes, fee, refund);
    }

    /// @inheritdoc IShardRegistry
    function failJob(uint256 jobId, string calldata reason) external onlyCoordinator nonReentrant {
        JobRecord storage job = _job(jobId);
        if (job.status == JobStatus.Routed) {
            if (job.coordinator != msg.sender) revert ShardRegistryNotJobCoordinator(jobId, msg.sender);
        } else if (job.status != JobStatus.Submitted) {
            revert ShardRegistryInvalidJobStatus(jobId, job.status);
        }
        uint256 refund = _closeWithRefund(jobId, job, JobStatus.Failed);
        emit JobFailed(jobId, reason, refund);
    }

    /// @inheritdoc IShardRegistry
    /// @dev Possible once `block.timestamp > deadline`.
    function cancelJob(uint256 jobId) external nonReentrant {
        JobRecord storage job = _job(jobId);
        if (job.client != msg.sender) revert ShardRegistryNotJobClient(jobId, msg.sender);
        if (job.status != JobStatus.Submitted && job.status != JobStatus.Routed) {
            revert ShardRegistryInvalidJobStatus(jobId, job.status);
        }
        if (block.timestamp <= job.deadline) revert ShardRegistryDeadlineNotReached(jobId, job.deadline);
        uint256 refund = _closeWithRefund(jobId, job, JobStatus.Cancelled);
        emit JobCancelled(jobId, refund);
    }

    // ---------------------------------------------------------------- slashing and payouts

    /// @inheritdoc IShardRegistry
    /// @dev `jobId` is 0 when the evidence is not about one job; otherwise it must exist.
    function slash(address node, bytes32 evidenceHash, uint256 jobId) external onlyCoordinator nonReentrant {
        Node storage n = _registeredNode(node);
        if (jobId != 0) _job(jobId);
        uint256 fromStake = (n.stake * _slashBps) / _BPS;
        uint256 fromUnbonding = (n.unbonding * _slashBps) / _BPS;
        n.stake -= fromStake;
        n.unbonding -= fromUnbonding;
        n.jailed = true;
        _totalStaked -= fromStake;
        _totalUnbonding -= fromUnbonding;
        _protocolFees += fromStake + fromUnbonding;
        emit NodeSlashed(node, fromStake + fromUnbonding, evidenceHash, jobId);
    }

    /// @inheritdoc IShardRegistry
    /// @dev Checks, effects, event, then the transfer; reverts with {ShardRegistryTransferFailed} if the
    /// recipient refuses the ether (the balance then stays claimable).
    function claim() external nonReentrant {
        uint256 amount = _claimable[msg.sender];
        if (amount == 0) revert ShardRegistryNothingToClaim(msg.sender);
        _claimable[msg.sender] = 0;
        _totalClaimable -= amount;
        emit Claimed(msg.sender, amount);
        (bool ok, ) = payable(msg.sender).call{value: amount}("");
        if (!ok) revert ShardRegistryTransferFailed(msg.sender, amount);
    }

    // ---------------------------------------------------------------- views

    /// @notice The deployer: approves coordinators and withdraws protocol fees.
    function owner() external view returns (address) {
        return _owner;
    }

    /// @notice Least stake (wei) to register and to announce shards.
    function minStake() external view returns (uint256) {
        return _minStake;
    }

    /// @notice Seconds between {requestUnstake} and {withdrawStake}.
    function unbondingPeriod() external view returns (uint64) {
        return _unbondingPeriod;
    }

    /// @notice Seconds after submission until a client may cancel an unfinalized job.
    function jobTimeout() external view returns (uint64) {
        return _jobTimeout;
    }

    /// @notice Coordinator fee in basis points of what the nodes of a job are paid.
    function coordinatorFeeBps() external view returns (uint16) {
        return _coordinatorFeeBps;
    }

    /// @notice Share of stake and unbonding stake taken by {slash}, in basis points.
    function slashBps() external view returns (uint16) {
        return _slashBps;
    }

    /// @notice Prompt positions a job may bill on top of its `maxTokens`.
    function maxPromptTokens() external view returns (uint32) {
        return _maxPromptTokens;
    }

    /// @notice Whether `account` is an approved coordinator.
    function isCoordinator(address account) external view returns (bool) {
        return _coordinators[account];
    }

    /// @notice The HTTP endpoint recorded for coordinator `account` (empty if none).
    function coordinatorEndpoint(address account) external view returns (string memory) {
        return _coordinatorEndpoints[account];
    }

    /// @notice The node's record; all fields zero (`registered == false`) for an unknown address.
    function getNode(address node) external view returns (Node memory) {
        return _nodes[node];
    }

    /// @notice Reverts with {ShardRegistryUnknownModel} for an unknown id.
    function getModel(uint256 modelId) external view returns (Model memory) {
        return _model(modelId);
    }

    /// @notice Number of models; their ids are 1 … modelCount().
    function modelCount() external view returns (uint256) {
        return _models.length;
    }

    /// @notice Reverts with {ShardRegistryUnknownAssignment} for an unknown id.
    function getAssignment(uint256 assignmentId) external view returns (Assignment memory) {
        AssignmentRecord storage a = _assignment(assignmentId);
        return Assignment(a.node, a.modelId, a.start, a.end, a.live);
    }

    /// @notice Number of assignments ever announced; their ids are 1 … assignmentCount().
    function assignmentCount() external view returns (uint256) {
        return _assignments.length;
    }

    /// @inheritdoc IShardRegistry
    /// @dev In no particular order (releasing one moves the last id into its place).
    function liveAssignments(uint256 modelId) external view returns (uint256[] memory) {
        _model(modelId);
        return _modelLive[modelId];
    }

    /// @notice Reverts with {ShardRegistryUnknownJob} for an unknown id. `escrow` stays the amount paid in.
    function getJob(uint256 jobId) external view returns (Job memory) {
        JobRecord storage j = _job(jobId);
        return Job(j.client, j.modelId, j.inputHash, j.maxTokens, j.escrow, j.deadline, j.status, j.coordinator, j.outputHash);
    }

    /// @notice The hops of a job in the order they were routed or added.
    function getHops(uint256 jobId) external view returns (Hop[] memory) {
        _job(jobId);
        return _hops[jobId];
    }

    /// @notice Number of jobs; their ids are 1 … jobCount().
    function jobCount() external view returns (uint256) {
        return _jobs.length;
    }

    /// @inheritdoc IShardRegistry
    function quote(uint256 modelId, uint32 maxTokens) public view returns (uint256) {
        Model storage model = _model(modelId);
        uint256 base = uint256(model.numLayers) * (uint256(maxTokens) + _maxPromptTokens) * model.pricePerLayerToken;
        return base + (base * _coordinatorFeeBps) / _BPS;
    }

    /// @notice Wei that `account` can take out with {claim}.
    function claimable(address account) external view returns (uint256) {
        return _claimable[account];
    }

    /// @notice Sum of all nodes' bonded stake.
    function totalStaked() external view returns (uint256) {
        return _totalStaked;
    }

    /// @notice Sum of all nodes' unbonding stake.
    function totalUnbonding() external view returns (uint256) {
        return _totalUnbonding;
    }

    /// @notice Sum of the escrow of all submitted or routed jobs.
    function totalEscrow() external view returns (uint256) {
        return _totalEscrow;
    }

    /// @notice Sum of all claimable balances.
    function totalClaimable() external view returns (uint256) {
        return _totalClaimable;
    }

    /// @notice Slashed stake not yet withdrawn by the owner.
    function protocolFees() external view returns (uint256) {
        return _protocolFees;
    }

    // ---------------------------------------------------------------- internal

    function _registeredNode(address account) private view returns (Node storage node) {
        node = _nodes[account];
        if (!node.registered) revert ShardRegistryNotRegistered(account);
    }

    function _model(uint256 modelId) private view returns (Model storage) {
        if (modelId == 0 || modelId > _models.length) revert ShardRegistryUnknownModel(modelId);
        return _models[modelId - 1];
    }

    function _assignment(uint256 assignmentId) private view returns (AssignmentRecord storage) {
        if (assignmentId == 0 || assignmentId > _assignments.length) {
            revert ShardRegistryUnknownAssignment(assignmentId);
        }
        return _assignments[assignmentId - 1];
    }

    function _job(uint256 jobId) private view returns (JobRecord storage) {
        if (jobId == 0 || jobId > _jobs.length) revert ShardRegistryUnknownJob(jobId);
        return _jobs[jobId - 1];
    }

    /// @dev The job, checked to be routed and coordinated by `account`.
    function _routedJobOf(uint256 jobId, address account) private view returns (JobRecord storage job) {
        job = _job(jobId);
        if (job.status != JobStatus.Routed) revert ShardRegistryInvalidJobStatus(jobId, job.status);
        if (job.coordinator != account) revert ShardRegistryNotJobCoordinator(jobId, account);
    }

    /// @dev Reverts unless [start, end) is a valid span and `node` is unjailed and holds a live
    /// assignment of the model that covers it.
    function _checkHop(uint256 modelId, uint32 numLayers, address node, uint32 start, uint32 end) private view {
        if (start >= end || end > numLayers) revert ShardRegistryInvalidSpan(start, end, numLayers);
        if (_nodes[node].jailed) revert ShardRegistryNodeJailed(node);
        uint256[] storage live = _nodeLive[node];
        for (uint256 i = 0; i < live.length; ++i) {
            AssignmentRecord storage a = _assignments[live[i] - 1];
            if (a.modelId == modelId && a.start <= start && end <= a.end) return;
        }
        revert ShardRegistryNodeNotServing(node, start, end);
    }

    /// @dev Ends an open job with a full refund to its client and frees its routed nodes.
    function _closeWithRefund(uint256 jobId, JobRecord storage job, JobStatus status) private returns (uint256 refund) {
        refund = job.escrow;
        job.status = status;
        _totalEscrow -= refund;
        Hop[] storage hops = _hops[jobId];
        for (uint256 i = 0; i < hops.length; ++i) {
            _nodes[hops[i].node].openJobs -= 1;
        }
        if (refund != 0) _credit(job.client, refund);
    }

    function _credit(address account, uint256 amount) private {
        _claimable[account] += amount;
        _totalClaimable += amount;
    }

    /// @dev Swap-and-pop removal of a released assignment from its node's and its model's live lists.
    function _unlist(AssignmentRecord storage a) private {
        uint256[] storage byNode = _nodeLive[a.node];
        uint256 movedId = byNode[byNode.length - 1];
        byNode[a.nodeIndex] = movedId;
        _assignments[movedId - 1].nodeIndex = a.nodeIndex;
        byNode.pop();
        uint256[] storage byModel = _modelLive[a.modelId];
        movedId = byModel[byModel.length - 1];
        byModel[a.modelIndex] = movedId;
        _assignments[movedId - 1].modelIndex = a.modelIndex;
        byModel.pop();
    }
}
