// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

/// @title IShardRegistry (protocol v2)
/// @notice The whole on-chain protocol of shardnet: node stakes, models, shard (layer-block) assignments,
/// paid jobs with escrow, signed commitments, batched settlement into claimable balances, and slashing on
/// evidence the contract checks itself.
/// @dev Trust model (who can do what to whose money):
/// - The owner (OpenZeppelin Ownable2Step) approves coordinators (effective after `approvalDelay`), revokes
///   them (at once) and withdraws protocol fees (`protocolFeeBps` of what nodes are paid). It cannot touch a
///   stake, an escrow or a claimable balance, and it cannot slash.
/// - A client's escrow pays only (a) hops whose node (registered, unjailed, staked at least `minStake`) signed an
///   EIP-712 {Commitment} for the job, at `positions x (end - start) x price`, settled by the coordinator the client named in {submitJob} or posted
///   by the node itself with that coordinator's signed {Ticket} (bounded by its `maxPositions`; the coordinator's
///   settlement of the same hop replaces the post within `disputeWindow`); (b) the coordinator fee on (a) and the
///   protocol fee; (c) once settled, the verdicts of the verifiers the contract draws for its hops, `verifyBps` of
///   the hop's pay each, from the verification share the settlement held ({payVerifiers}). The rest goes back to
///   the client. A client cancels after the deadline; anyone may close the
///   job of a revoked coordinator after the deadline. Posted work is voided only by the coordinator's settlement of the same hop.
/// - A node's stake is taken only by {slash}, with the node's own signature over the commitment, a Merkle proof
///   of the disputed leaf, and signed verdicts of more than half of the stake of verifiers the contract drew at
///   random among the other nodes staked on that span whose stake and assignment date from the job's close block
///   or before (its randomness is public only later). The slashed stake goes to the job's client.
/// - Ether leaves only through {claim} (pull payments, guarded against reentrancy).
/// Bounds: at most `MAX_HOPS` hops per job, `MAX_LIVE_PER_NODE` live assignments per node, `MAX_LIVE_PER_MODEL`
/// per model, `MAX_STRING` bytes per string; closing a job is O(hops) <= O(MAX_HOPS).
/// Invariant: address(this).balance == totalStaked + totalUnbonding + protocolFees + pendingPosted + the sum of every
/// open job's escrow not reserved by posted commitments + the sum of every settled job's verification share still held
/// ({verificationState}; its amount follows from the job's record, see {quote}) + the sum of every account's claimable
/// balance. (The last three are not kept as totals: that would cost every job more storage writes; tests sum them from
/// events and views.)
/// @dev The types, events and errors of {IShardRegistry}, apart so that {ShardDisputes} (which implements only some of
/// its functions, run by DELEGATECALL from the registry) shares them.
interface IShardRegistryTypes {
    // ---------------------------------------------------------------- types
    enum JobStatus {
        None,
        Open,
        Settled,
        Failed,
        Cancelled
    }

    struct Node {
        string endpoint;
        uint256 stake;          // bonded stake, slashable
        uint256 unbonding;      // requested for withdrawal, still slashable until withdrawn
        uint64 unbondingUntil;  // when `unbonding` may be withdrawn (also not before `bondedUntil`)
        uint64 bondedUntil;     // the node's last paid hop + disputeWindow: stake stays slashable until then
        uint32 liveAssignments; // shards announced and not released (at most MAX_LIVE_PER_NODE)
        bool registered;
        bool jailed;            // slashed: forever (this address never serves again, even after re-staking)
    }

    struct Model {
        string name;
        string manifestCid;     // CIDv1 (base32 string) of the shard manifest
        uint32 numLayers;       // at most 65535
        uint256 pricePerLayerToken; // wei per layer per token position computed (below 2**80)
        address owner;
    }

    struct Assignment {
        address node;
        uint256 modelId;
        uint32 start;           // layers [start, end)
        uint32 end;
        bool live;
    }

    /// @notice A job as submitted; only its hash is stored, every field is in {JobSubmitted}. Calls that act on a
    /// job repeat it (the contract checks it against the stored hash).
    struct JobRecord {
        address client;
        address coordinator;    // chosen by the client; only it settles or fails the job
        uint64 modelId;
        uint32 maxTokens;
        uint64 deadline;        // after it: no more posted commitments; the client may cancel
        uint128 escrow;         // wei paid in
        uint32 numLayers;       // the model's, copied at submission (bounds every hop's span)
        uint80 price;           // the model's pricePerLayerToken, copied at submission
    }

    /// @notice A node's EIP-712 signed commitment for one hop of a job (see {Commitment} in docs/PROTOCOL.md):
    /// Commitment(uint256 jobId,uint32 start,uint32 end,uint32 positions,uint32 steps,bytes32 root).
    /// `positions` token positions computed over layers [start, end); `steps` leaves under the Merkle `root`.
    /// (r, vs) is the EIP-2098 compact signature.
    struct SignedCommitment {
        address node;
        uint32 start;
        uint32 end;
        uint32 positions;
        uint32 steps;
        bytes32 root;
        bytes32 r;
        bytes32 vs;
    }

    /// @notice One job of a {settleJobs} batch: hops in layer order with disjoint spans (each starts at or after
    /// the previous one's end, all inside [0, numLayers)), so no layer of a job is paid twice.
    struct Settlement {
        uint256 jobId;
        JobRecord job;
        bytes32 outputHash;     // keccak256 of the UTF-8 output text
        SignedCommitment[] hops;
    }

    /// @notice The coordinator's EIP-712 Ticket(address worker,string sessionId,uint256 jobId,uint32 start,uint32 end,
    /// uint32 maxPositions,uint64 expiresAt) that let the worker serve the span; a worker shows it with
    /// {postCommitment}. `maxPositions` bounds the positions a posted commitment may bill (prompt + max tokens).
    struct TicketProof {
        string sessionId;
        uint32 maxPositions;
        uint64 expiresAt;
        bytes32 r;
        bytes32 vs;
    }

    /// @notice A verifier's EIP-2098 signature over Verdict(uint256 jobId,address accused,bytes32 root,uint32 leafIndex,
    /// bytes32 leaf): "this committed leaf is wrong".
    struct VerdictSignature {
        bytes32 r;
        bytes32 vs;
    }

    /// @notice What {slash} checks: the closed job, the accused's signed commitment, the disputed leaf and its
    /// Merkle proof (odd-leaf rule of shardnet.wire.commitment), and the drawn verifiers' verdicts.
    struct SlashEvidence {
        uint256 jobId;
        JobRecord job;
        uint64 closeBlock;      // block of the job's settlement (from {JobSettled})
        SignedCommitment commitment;
        uint32 leafIndex;
        bytes32 leaf;
        bytes32[] proof;
        VerdictSignature[] verdicts;
    }

    /// @notice A drawn verifier's signed {Verdict} on a hop, shown to be paid for it: guilty on leaf `leafIndex` =
    /// `leaf`, or innocent (leafIndex type(uint32).max, leaf 0: "I recomputed the hop and every leaf is right").
    struct PaidVerdict {
        uint32 leafIndex;
        bytes32 leaf;
        bytes32 r;
        bytes32 vs;
    }

    /// @notice One checked hop of a {VerificationPayment}: the hop's signed commitment as settled, the size of the draw
    /// its verifiers were asked from (`picks`, MIN_VERIFIERS to MAX_VERIFIERS: the first k of a larger draw are the draw
    /// of k), and the verdicts of those that answered.
    struct HopVerdicts {
        SignedCommitment commitment;
        uint8 picks;
        PaidVerdict[] verdicts;
    }

    /// @notice A settled job's verification, paid from the share its settlement held: hops in layer order, disjoint.
    struct VerificationPayment {
        uint256 jobId;
        JobRecord job;
        uint64 closeBlock;      // block of the job's settlement (from {JobSettled})
        HopVerdicts[] hops;
    }

    // ---------------------------------------------------------------- events
    event CoordinatorSet(address indexed coordinator, string endpoint, bool approved, uint64 activeFrom);
    event NodeRegistered(address indexed node, string endpoint, uint256 stake);
    event EndpointUpdated(address indexed node, string endpoint);
    event StakeAdded(address indexed node, uint256 amount, uint256 newStake);
    event UnstakeRequested(address indexed node, uint256 amount, uint64 unbondingUntil);
    event StakeWithdrawn(address indexed node, uint256 amount);
    event ModelRegistered(uint256 indexed modelId, address indexed owner, string name, string manifestCid, uint32 numLayers, uint256 pricePerLayerToken);
    event ShardAnnounced(uint256 indexed assignmentId, address indexed node, uint256 indexed modelId, uint32 start, uint32 end);
    event ShardReleased(uint256 indexed assignmentId, address indexed node, uint256 indexed modelId);
    event JobSubmitted(uint256 indexed jobId, address indexed client, address indexed coordinator, uint64 modelId, bytes32 inputHash, uint32 maxTokens, uint128 escrow, uint64 deadline, uint32 numLayers, uint80 price);
    /// @dev `paidHops` bit i is set when hop i of the settlement's calldata was paid (the hops are in the calldata).
    event JobSettled(uint256 indexed jobId, bytes32 outputHash, uint256 paidToNodes, uint256 coordinatorFee, uint256 refund, uint16 paidHops);
    /// @dev `paid` is reserved from the escrow, provisionally: the job's coordinator's settlement with the node's hop
    /// voids it until `payableAt` ({PostedCommitmentVoided}); from then on anyone may pay it ({collectPosted}).
    event CommitmentPosted(uint256 indexed jobId, address indexed node, uint32 start, uint32 end, uint32 positions, uint32 steps, bytes32 root, uint256 paid, uint64 payableAt);
    /// @dev A provisional post replaced by the coordinator's settlement of the same hop; its reserve went back.
    event PostedCommitmentVoided(uint256 indexed jobId, address indexed node, uint32 start, uint32 end, uint256 reserved);
    /// @dev A posted commitment paid after its window: to the node (even if it left since), or back to the client
    /// if the node was jailed (slashed) by then.
    event PostedCommitmentPaid(uint256 indexed jobId, address indexed node, uint32 start, uint32 end, address to, uint256 amount);
    event JobCancelled(uint256 indexed jobId, address indexed by, uint256 refund);
    event JobFailed(uint256 indexed jobId, string reason, uint256 refund);
    event NodeSlashed(address indexed node, uint256 indexed jobId, address indexed client, uint256 amount, bytes32 root, uint32 leafIndex, uint256 guiltyStake, uint256 drawnStake);
    /// @dev A settled job's held verification share is spent: `paid` to the drawn verifiers that answered (`verdicts`
    /// of them), `refund` credited back to the client.
    event VerificationPaid(uint256 indexed jobId, uint256 paid, uint256 refund, uint256 verdicts);
    event Claimed(address indexed account, uint256 amount);
    event FeesWithdrawn(address indexed to, uint256 amount);

    // ---------------------------------------------------------------- errors
    error ShardRegistryInvalidParameter(string name);
    error ShardRegistryNotCoordinator(address account);
    error ShardRegistryInsufficientStake(uint256 provided, uint256 required);
    error ShardRegistryAmountTooLarge(uint256 amount, uint256 maximum);
    error ShardRegistryAlreadyRegistered(address node);
    error ShardRegistryNotRegistered(address node);
    error ShardRegistryNodeJailed(address node);
    error ShardRegistryZeroAmount();
    error ShardRegistryStringTooLong(string field, uint256 length, uint256 maximum);
    error ShardRegistryUnstakeTooLarge(uint256 requested, uint256 available);
    error ShardRegistryHasLiveAssignments(address node, uint32 count);
    error ShardRegistryStillUnbonding(uint64 until);
    error ShardRegistryNothingToWithdraw(address node);
    error ShardRegistryUnknownModel(uint256 modelId);
    error ShardRegistryInvalidModel(string reason);
    error ShardRegistryInvalidSpan(uint32 start, uint32 end, uint32 numLayers);
    error ShardRegistryTooManyAssignments(address node, uint32 count);
    error ShardRegistryModelFull(uint256 modelId, uint256 count);
    error ShardRegistryUnknownAssignment(uint256 assignmentId);
    error ShardRegistryNotAssignmentOwner(uint256 assignmentId, address account);
    error ShardRegistryAssignmentNotLive(uint256 assignmentId);
    error ShardRegistryInvalidHopSpan(uint256 jobId, uint256 hopIndex, uint32 start, uint32 end);
    error ShardRegistryUnknownJob(uint256 jobId);
    error ShardRegistryJobRecordMismatch(uint256 jobId);
    error ShardRegistryEscrowTooLow(uint256 provided, uint256 required);
    /// @notice {submitJob} asked for more tokens than the registry's `maxJobTokens`.
    error ShardRegistryMaxTokensTooLarge(uint32 maxTokens, uint32 limit);
    error ShardRegistryInvalidJobStatus(uint256 jobId, JobStatus status);
    error ShardRegistryNotJobCoordinator(uint256 jobId, address account);
    error ShardRegistryNotJobClient(uint256 jobId, address account);
    error ShardRegistryTooManyHops(uint256 jobId, uint256 count, uint256 maximum);
    error ShardRegistryHopsNotSorted(uint256 jobId, uint256 hopIndex);
    error ShardRegistryPositionsTooHigh(uint256 jobId, uint256 hopIndex, uint256 positions, uint256 maximum);
    error ShardRegistryBadCommitmentSignature(uint256 jobId, uint256 hopIndex, address node);
    error ShardRegistryBadTicket(uint256 jobId, address worker);
    error ShardRegistryNotHopNode(uint256 jobId, address account);
    error ShardRegistryAlreadyCommitted(uint256 jobId, address node);
    error ShardRegistryPostWindowClosed(uint256 jobId, uint64 deadline);
    /// @notice The ticket expired more than `disputeWindow` seconds ago: it can no longer back a post.
    error ShardRegistryTicketExpired(uint256 jobId, uint64 expiresAt);
    /// @notice No provisional posted commitment of (job, node, start, end) is waiting to be paid.
    error ShardRegistryNothingToCollect(uint256 jobId, address node);
    /// @notice The posted commitment can still be voided by the coordinator's settlement until `payableAt`.
    error ShardRegistryPostProvisional(uint256 jobId, address node, uint64 payableAt);
    error ShardRegistryDeadlineNotReached(uint256 jobId, uint64 deadline);
    error ShardRegistryJobNotClosed(uint256 jobId);
    error ShardRegistryAlreadySlashed(uint256 jobId, address node);
    error ShardRegistryBadMerkleProof(uint256 jobId, uint32 leafIndex);
    error ShardRegistryRandomnessUnavailable(uint256 blockNumber);
    error ShardRegistryNotEnoughVerifiers(uint256 drawn, uint256 required);
    error ShardRegistryVerdictNotFromDrawnVerifier(uint256 index, address signer);
    error ShardRegistryNoMajority(uint256 guiltyStake, uint256 drawnStake);
    /// @notice More verdicts on one hop than verifiers drawn for it.
    error ShardRegistryTooManyVerdicts(uint256 jobId, uint256 count, uint256 maximum);
    /// @notice A hop's draw size is outside MIN_VERIFIERS..MAX_VERIFIERS.
    error ShardRegistryInvalidDrawSize(uint256 jobId, uint256 picks);
    /// @notice The job's settlement held no verification share, or it was paid or refunded already.
    error ShardRegistryNoVerificationHeld(uint256 jobId);
    /// @notice The held verification share can still be paid to verifiers until block `untilBlock`.
    error ShardRegistryVerificationOpen(uint256 jobId, uint256 untilBlock);
    /// @notice A batch argument longer than the contract accepts.
    error ShardRegistryBatchTooLarge(uint256 count, uint256 maximum);
    error ShardRegistryInvalidRecipient(address to);
    error ShardRegistryNothingToClaim(address account);
    error ShardRegistryTransferFailed(address to, uint256 amount);

}

/// @notice The registry's functions (see the title above {IShardRegistryTypes}).
interface IShardRegistry is IShardRegistryTypes {
    // ---------------------------------------------------------------- governance
    /// @notice The owner approves a coordinator (it may be named by new jobs `approvalDelay` seconds later) or
    /// revokes it (at once: it can no longer settle; its open jobs can be closed by anyone after their deadline).
    /// Emits {CoordinatorSet}.
    function setCoordinator(address coordinator, string calldata endpoint, bool approved) external;
    /// @notice The owner credits the protocol fees to `to` (not address(0), not the registry). Emits {FeesWithdrawn}.
    function withdrawFees(address to) external;

    // ---------------------------------------------------------------- nodes
    /// @notice Register the sender as a node with an endpoint and a stake of at least `minStake`. A jailed address
    /// can never register again. Emits {NodeRegistered}.
    function registerNode(string calldata endpoint) external payable;
    /// @notice Change the sender's endpoint. Emits {EndpointUpdated}.
    function updateEndpoint(string calldata endpoint) external;
    /// @notice Add stake to the sender's node (a jail is never lifted). Emits {StakeAdded}.
    function addStake() external payable;
    /// @notice Move `amount` of stake into unbonding for `unbondingPeriod` seconds. If less than `minStake`
    /// would remain, the node must have no live assignments. Emits {UnstakeRequested}.
    function requestUnstake(uint256 amount) external;
    /// @notice Credit unbonded stake to the sender's claimable balance once both the unbonding period and the
    /// dispute window after its last paid hop are over. Emits {StakeWithdrawn}.
    function withdrawStake() external;

    // ---------------------------------------------------------------- models and shards
    /// @notice Register a model; anyone may. Emits {ModelRegistered}.
    function registerModel(string calldata name, string calldata manifestCid, uint32 numLayers, uint256 pricePerLayerToken) external returns (uint256 modelId);
    /// @notice A registered, unjailed node with at least `minStake` announces it serves layers [start, end).
    /// Emits {ShardAnnounced}.
    function announceShard(uint256 modelId, uint32 start, uint32 end) external returns (uint256 assignmentId);
    /// @notice The node releases one of its assignments. Emits {ShardReleased}.
    function releaseShard(uint256 assignmentId) external;

    // ---------------------------------------------------------------- jobs
    /// @notice Submit a job for `coordinator`, paying at least `quote(modelId, maxTokens)`;
    /// `maxTokens` must be 1 to `maxJobTokens` (else {ShardRegistryZeroAmount} or {ShardRegistryMaxTokensTooLarge}). Only a coordinator that is
    /// approved and whose approval took effect by now can settle the job (check {isCoordinator} first); otherwise the
    /// client cancels it after the deadline. Emits {JobSubmitted}.
    function submitJob(uint256 modelId, bytes32 inputHash, uint32 maxTokens, address coordinator) external payable returns (uint256 jobId);
    /// @notice The jobs' coordinator settles open jobs: each hop with a valid signed commitment of a registered,
    /// unjailed node staked at least `minStake`, the hops' spans disjoint, in layer order and inside the model, is paid `positions x (end - start) x price` (while escrow lasts; a
    /// hop the node posted itself replaces the post while the post is provisional, and is skipped after), the coordinator gets `coordinatorFeeBps` and the
    /// protocol `protocolFeeBps` of that, the client the rest. A job already closed is skipped. Emits {JobSettled}
    /// per job.
    function settleJobs(Settlement[] calldata settlements) external;
    /// @notice A node's fallback: it posts its own signed commitment, with the coordinator's ticket (positions at
    /// most the ticket's `maxPositions`, not later than `disputeWindow` after the ticket's expiry), before the
    /// deadline. Its pay is reserved from the escrow at once; for `disputeWindow` seconds the job's coordinator's
    /// settlement carrying the node's own commitment for the same span replaces it; after that anyone pays it with
    /// {collectPosted}, and cancel or fail cannot void it.
    /// Emits {CommitmentPosted}.
    function postCommitment(uint256 jobId, JobRecord calldata job, SignedCommitment calldata commitment, TicketProof calldata ticket) external;
    /// @notice Anyone pays a posted commitment whose window is over (to the node, even if it left since; to the
    /// job's client if the node was jailed since). Emits {PostedCommitmentPaid}.
    function collectPosted(uint256 jobId, address node, uint32 start, uint32 end) external;
    /// @notice The job's coordinator fails an open job: what was not paid to posted commitments goes back to the
    /// client. Emits {JobFailed}.
    function failJob(uint256 jobId, JobRecord calldata job, string calldata reason) external;
    /// @notice After the deadline, the client (or anyone, if the job's coordinator was revoked) closes an open job:
    /// what posted commitments did not take goes back to the client. Emits {JobCancelled}.
    function cancelJob(uint256 jobId, JobRecord calldata job) external;

    // ---------------------------------------------------------------- slashing and payouts
    /// @notice Anyone presents checked evidence against a node; `slashBps` of its stake and unbonding stake go to
    /// the job's client and the node is jailed forever (its assignments released). Once per (job, node).
    /// Emits {NodeSlashed}.
    function slash(SlashEvidence calldata evidence) external;
    /// @notice The jobs' coordinator pays the verification of settled jobs (at most MAX_PAY_BATCH) from the share
    /// each settlement held: every verdict signed by a verifier the contract draws for that hop (as {drawVerifiers},
    /// `picks` of them) earns `verifyBps` of the hop's pay, once per (job, hop, verifier), while the job's share lasts
    /// (it holds HELD_VERDICTS verdicts' pay of every layer's work; in calldata order, the last may get less); hops as
    /// settled (signed by their nodes, in layer order, disjoint). What the verdicts do not take goes back to the client at once; each
    /// job's share is spent once. Only while the draw's randomness is readable (256 blocks). Emits {VerificationPaid}.
    function payVerifiers(VerificationPayment[] calldata payments) external;
    /// @notice Anyone returns a settled job's unspent verification share to its client once no draw can reach the job
    /// (closeBlock + DRAW_DELAY + 256 blocks). Emits {VerificationPaid} with nothing paid.
    function refundVerification(uint256 jobId, JobRecord calldata job, uint64 closeBlock) external;
    /// @notice Pay out the sender's claimable balance. Emits {Claimed}.
    function claim() external;

    // ---------------------------------------------------------------- views
    function minStake() external view returns (uint256);
    function unbondingPeriod() external view returns (uint64);
    function jobTimeout() external view returns (uint64);
    function coordinatorFeeBps() external view returns (uint16);
    function slashBps() external view returns (uint16);
    function maxPromptTokens() external view returns (uint32);
    function approvalDelay() external view returns (uint64);
    function disputeWindow() external view returns (uint64);
    function protocolFeeBps() external view returns (uint16);
    /// @notice The largest `maxTokens` {submitJob} accepts: it caps what one job can escrow.
    function maxJobTokens() external view returns (uint32);
    /// @notice Each paid verdict's pay, in basis points of the checked hop's pay; a job's quote and settlement hold
    /// HELD_VERDICTS x this share of its largest possible pay for its verification.
    function verifyBps() external view returns (uint16);
    /// @notice Whether a job's settlement held a verification share (`held`) and whether it is still unspent (`open`).
    function verificationState(uint256 jobId) external view returns (bool held, bool open);
    /// @notice Whether `account` is approved and its approval delay is over.
    function isCoordinator(address account) external view returns (bool);
    /// @notice The recorded endpoint and when the approval takes effect (0: not approved).
    function coordinatorInfo(address account) external view returns (string memory endpoint, uint64 activeFrom);
    function getNode(address node) external view returns (Node memory);
    function getModel(uint256 modelId) external view returns (Model memory);
    function modelCount() external view returns (uint256);
    function getAssignment(uint256 assignmentId) external view returns (Assignment memory);
    function assignmentCount() external view returns (uint256);
    /// @notice Ids of the live assignments of a model (at most MAX_LIVE_PER_MODEL).
    function liveAssignments(uint256 modelId) external view returns (uint256[] memory);
    /// @notice The status of a job and the wei its posted commitments took from the escrow so far.
    function jobState(uint256 jobId) external view returns (JobStatus status, uint256 postedPaid, uint256 postedHops);
    /// @notice A posted commitment: its reserved pay, when it becomes payable, and its state (0 none, 1 provisional,
    /// 2 paid, 3 voided by the coordinator's settlement).
    function postedCommitment(uint256 jobId, address node, uint32 start, uint32 end) external view returns (uint256 amount, uint64 payableAt, uint8 state);
    /// @notice Pay reserved by provisional posted commitments not yet paid or voided (part of the invariant).
    function pendingPosted() external view returns (uint256);
    function jobCount() external view returns (uint256);
    /// @notice The hash the registry keeps of an open job (low 16 bits replaced by flags): keccak256(abi.encode(jobId, job)).
    function jobRecordHash(uint256 jobId, JobRecord calldata job) external pure returns (bytes32);
    /// @notice The least escrow a job must carry: base = numLayers * (maxTokens + maxPromptTokens) * price, plus the
    /// coordinator and protocol fees on base, plus HELD_VERDICTS x verifyBps of base for its verification.
    function quote(uint256 modelId, uint32 maxTokens) external view returns (uint256);
    /// @notice Verifiers the contract draws for a dispute about `node`'s commitment `root` over [start, end) of a
    /// closed job (see {slash}), with their weight (stake + unbonding stake, as of the close).
    function drawVerifiers(uint256 jobId, JobRecord calldata job, uint64 closeBlock, address node, uint32 start, uint32 end, bytes32 root) external view returns (address[] memory verifiers, uint256[] memory stakes);
    function isSlashed(uint256 jobId, address node) external view returns (bool);
    function claimable(address account) external view returns (uint256);
    function totalStaked() external view returns (uint256);
    function totalUnbonding() external view returns (uint256);
    function protocolFees() external view returns (uint256);
}
