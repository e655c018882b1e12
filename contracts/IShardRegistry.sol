// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IShardRegistry
/// @notice The whole on-chain protocol of shardnet: node stakes, models, shard (layer-block)
/// assignments, paid jobs with escrow, commitments, settlement into claimable balances, slashing.
/// @dev Trust model: the deployer is the `owner`, who approves coordinators. Approved coordinators
/// route jobs, finalize them (deciding the split of the escrow, bounded by the job's escrow) and slash
/// nodes with an evidence hash. Clients can always cancel a job that was not finalized by its deadline
/// and get the whole escrow back. Nodes are paid only for hops whose commitment is on chain when the
/// job is finalized. Every transfer of ether is a pull (`claim`), guarded against reentrancy.
/// Invariant: address(this).balance == totalStaked + totalUnbonding + totalEscrow + totalClaimable + protocolFees.
interface IShardRegistry {
    // ---------------------------------------------------------------- types
    enum JobStatus {
        None,
        Submitted,
        Routed,
        Finalized,
        Cancelled,
        Failed
    }

    struct Node {
        string endpoint;
        uint256 stake;          // bonded stake, slashable
        uint256 unbonding;      // requested for withdrawal, still slashable until withdrawn
        uint64 unbondingUntil;  // when `unbonding` may be withdrawn
        uint32 liveAssignments; // shards announced and not released
        uint32 openJobs;        // routed jobs not yet finalized/cancelled/failed
        bool registered;
        bool jailed;            // slashed: may not announce shards or be routed until it re-registers stake
    }

    struct Model {
        string name;
        string manifestCid;     // CIDv1 (base32 string) of the shard manifest
        uint32 numLayers;
        uint256 pricePerLayerToken; // wei paid per layer per token position computed
        address owner;
    }

    struct Assignment {
        address node;
        uint256 modelId;
        uint32 start;           // layers [start, end)
        uint32 end;
        bool live;
    }

    struct Hop {
        address node;
        uint32 start;
        uint32 end;
        bytes32 commitment;     // zero until the node posts it
    }

    struct Job {
        address client;
        uint256 modelId;
        bytes32 inputHash;      // keccak256 of the UTF-8 prompt
        uint32 maxTokens;
        uint256 escrow;         // wei held for this job
        uint64 deadline;        // after it, an unfinalized job may be cancelled by its client
        JobStatus status;
        address coordinator;    // set by assignRoute
        bytes32 outputHash;     // keccak256 of the UTF-8 output text, set by finalizeJob
    }

    // ---------------------------------------------------------------- events
    event CoordinatorSet(address indexed coordinator, string endpoint, bool approved);
    event NodeRegistered(address indexed node, string endpoint, uint256 stake);
    event EndpointUpdated(address indexed node, string endpoint);
    event StakeAdded(address indexed node, uint256 amount, uint256 newStake);
    event UnstakeRequested(address indexed node, uint256 amount, uint64 unbondingUntil);
    event StakeWithdrawn(address indexed node, uint256 amount);
    event ModelRegistered(uint256 indexed modelId, address indexed owner, string name, string manifestCid, uint32 numLayers, uint256 pricePerLayerToken);
    event ShardAnnounced(uint256 indexed assignmentId, address indexed node, uint256 indexed modelId, uint32 start, uint32 end);
    event ShardReleased(uint256 indexed assignmentId, address indexed node, uint256 indexed modelId);
    event JobSubmitted(uint256 indexed jobId, address indexed client, uint256 indexed modelId, bytes32 inputHash, uint32 maxTokens, uint256 escrow, uint64 deadline);
    event JobRouted(uint256 indexed jobId, address indexed coordinator, address[] nodes, uint32[] starts, uint32[] ends);
    event HopAdded(uint256 indexed jobId, uint256 hopIndex, address indexed node, uint32 start, uint32 end);
    event CommitmentPosted(uint256 indexed jobId, address indexed node, uint256 hopIndex, bytes32 commitment);
    event JobFinalized(uint256 indexed jobId, bytes32 outputHash, uint256 paidToNodes, uint256 coordinatorFee, uint256 refund);
    event JobCancelled(uint256 indexed jobId, uint256 refund);
    event JobFailed(uint256 indexed jobId, string reason, uint256 refund);
    event NodeSlashed(address indexed node, uint256 amount, bytes32 evidenceHash, uint256 indexed jobId);
    event Claimed(address indexed account, uint256 amount);
    event FeesWithdrawn(address indexed to, uint256 amount);

    // ---------------------------------------------------------------- errors
    error ShardRegistryUnauthorized(address account);
    error ShardRegistryNotCoordinator(address account);
    error ShardRegistryInsufficientStake(uint256 provided, uint256 required);
    error ShardRegistryAlreadyRegistered(address node);
    error ShardRegistryNotRegistered(address node);
    error ShardRegistryNodeJailed(address node);
    error ShardRegistryZeroAmount();
    error ShardRegistryUnstakeTooLarge(uint256 requested, uint256 available);
    error ShardRegistryHasLiveAssignments(address node, uint32 count);
    error ShardRegistryHasOpenJobs(address node, uint32 count);
    error ShardRegistryStillUnbonding(uint64 until);
    error ShardRegistryNothingToWithdraw(address node);
    error ShardRegistryUnknownModel(uint256 modelId);
    error ShardRegistryInvalidModel(string reason);
    error ShardRegistryInvalidSpan(uint32 start, uint32 end, uint32 numLayers);
    error ShardRegistryUnknownAssignment(uint256 assignmentId);
    error ShardRegistryNotAssignmentOwner(uint256 assignmentId, address account);
    error ShardRegistryAssignmentNotLive(uint256 assignmentId);
    error ShardRegistryUnknownJob(uint256 jobId);
    error ShardRegistryEscrowTooLow(uint256 provided, uint256 required);
    error ShardRegistryInvalidJobStatus(uint256 jobId, JobStatus status);
    error ShardRegistryNotJobCoordinator(uint256 jobId, address account);
    error ShardRegistryNotJobClient(uint256 jobId, address account);
    error ShardRegistryRouteNotCovering(uint256 jobId);
    error ShardRegistryNodeNotServing(address node, uint32 start, uint32 end);
    error ShardRegistryNotRoutedNode(uint256 jobId, address account);
    error ShardRegistryAlreadyCommitted(uint256 jobId, address node);
    error ShardRegistryZeroCommitment();
    error ShardRegistryLengthMismatch(uint256 expected, uint256 got);
    error ShardRegistryLayerTokensTooHigh(uint256 hopIndex, uint256 layerTokens, uint256 maximum);
    error ShardRegistryPayoutExceedsEscrow(uint256 payout, uint256 escrow);
    error ShardRegistryDeadlineNotReached(uint256 jobId, uint64 deadline);
    error ShardRegistryNothingToClaim(address account);
    error ShardRegistryTransferFailed(address to, uint256 amount);
    error ShardRegistryReentrantCall();

    // ---------------------------------------------------------------- governance
    /// @notice The owner approves (or revokes) a coordinator and records its HTTP endpoint. Emits {CoordinatorSet}.
    function setCoordinator(address coordinator, string calldata endpoint, bool approved) external;
    /// @notice The owner withdraws accumulated protocol fees (slashed stake), credited to `to`'s claimable
    /// balance (`to` then calls {claim}). Emits {FeesWithdrawn}.
    function withdrawFees(address payable to) external;

    // ---------------------------------------------------------------- nodes
    /// @notice Register the sender as a node with an endpoint and a stake of at least `minStake`. Emits {NodeRegistered}.
    function registerNode(string calldata endpoint) external payable;
    /// @notice Change the sender's endpoint. Emits {EndpointUpdated}.
    function updateEndpoint(string calldata endpoint) external;
    /// @notice Add stake to the sender's node (also lifts a jail when the stake is back to `minStake`). Emits {StakeAdded}.
    function addStake() external payable;
    /// @notice Move `amount` of stake into unbonding for `unbondingPeriod` seconds. If less than `minStake`
    /// would remain, the node must have no live assignments. Emits {UnstakeRequested}.
    function requestUnstake(uint256 amount) external;
    /// @notice Withdraw unbonded stake after the unbonding period into the sender's claimable balance (then
    /// call {claim}); the node must have no open jobs. A node left with no stake and no live assignment is
    /// deregistered. Emits {StakeWithdrawn}.
    function withdrawStake() external;

    // ---------------------------------------------------------------- models and shards
    /// @notice Register a model; anyone may. Emits {ModelRegistered}.
    function registerModel(string calldata name, string calldata manifestCid, uint32 numLayers, uint256 pricePerLayerToken) external returns (uint256 modelId);
    /// @notice A registered, unjailed node with at least `minStake` announces it serves layers [start, end). Emits {ShardAnnounced}.
    function announceShard(uint256 modelId, uint32 start, uint32 end) external returns (uint256 assignmentId);
    /// @notice The node releases one of its assignments. Emits {ShardReleased}.
    function releaseShard(uint256 assignmentId) external;

    // ---------------------------------------------------------------- jobs
    /// @notice Submit a job, paying at least `quote(modelId, maxTokens)` into escrow. Emits {JobSubmitted}.
    function submitJob(uint256 modelId, bytes32 inputHash, uint32 maxTokens) external payable returns (uint256 jobId);
    /// @notice An approved coordinator routes a submitted job: hops must cover [0, numLayers) contiguously,
    /// each node must hold a live assignment covering its hop. Emits {JobRouted}.
    function assignRoute(uint256 jobId, address[] calldata nodes, uint32[] calldata starts, uint32[] calldata ends) external;
    /// @notice The job's coordinator adds a hop (failover: a replacement node for a span). Emits {HopAdded}.
    function addHop(uint256 jobId, address node, uint32 start, uint32 end) external;
    /// @notice A routed node posts its commitment for the job, once per hop it serves. Emits {CommitmentPosted}.
    function postCommitment(uint256 jobId, bytes32 commitment) external;
    /// @notice The job's coordinator finalizes: hop i is paid layerTokens[i] * pricePerLayerToken if it committed
    /// (layerTokens[i] <= (end - start) * (maxTokens + maxPromptTokens)), the coordinator gets `coordinatorFeeBps` of that,
    /// the client is refunded the rest. Emits {JobFinalized}.
    function finalizeJob(uint256 jobId, bytes32 outputHash, uint64[] calldata layerTokens) external;
    /// @notice The job's coordinator (or any approved one, for a job never routed) fails it: full refund. Emits {JobFailed}.
    function failJob(uint256 jobId, string calldata reason) external;
    /// @notice The client cancels a job that was not finalized by its deadline: full refund. Emits {JobCancelled}.
    function cancelJob(uint256 jobId) external;

    // ---------------------------------------------------------------- slashing and payouts
    /// @notice An approved coordinator slashes `slashBps` of a node's stake and unbonding stake into protocol
    /// fees and jails the node, recording the evidence. Emits {NodeSlashed}.
    function slash(address node, bytes32 evidenceHash, uint256 jobId) external;
    /// @notice Pay out the sender's claimable balance. Emits {Claimed}.
    function claim() external;

    // ---------------------------------------------------------------- views
    function owner() external view returns (address);
    function minStake() external view returns (uint256);
    function unbondingPeriod() external view returns (uint64);
    function jobTimeout() external view returns (uint64);
    function coordinatorFeeBps() external view returns (uint16);
    function slashBps() external view returns (uint16);
    function maxPromptTokens() external view returns (uint32);
    function isCoordinator(address account) external view returns (bool);
    function coordinatorEndpoint(address account) external view returns (string memory);
    function getNode(address node) external view returns (Node memory);
    function getModel(uint256 modelId) external view returns (Model memory);
    function modelCount() external view returns (uint256);
    function getAssignment(uint256 assignmentId) external view returns (Assignment memory);
    function assignmentCount() external view returns (uint256);
    /// @notice Ids of the live assignments of a model.
    function liveAssignments(uint256 modelId) external view returns (uint256[] memory);
    function getJob(uint256 jobId) external view returns (Job memory);
    function getHops(uint256 jobId) external view returns (Hop[] memory);
    function jobCount() external view returns (uint256);
    /// @notice The least escrow a job must carry: numLayers * (maxTokens + maxPromptTokens) * price, plus the coordinator fee on that.
    function quote(uint256 modelId, uint32 maxTokens) external view returns (uint256);
    function claimable(address account) external view returns (uint256);
    function totalStaked() external view returns (uint256);
    function totalUnbonding() external view returns (uint256);
    function totalEscrow() external view returns (uint256);
    function totalClaimable() external view returns (uint256);
    function protocolFees() external view returns (uint256);
}
