// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IShardRegistry} from "./IShardRegistry.sol";

/// @notice The one registry view StorageRewards reads: whether a storage node is registered and not jailed.
interface INodeDirectory {
    function getNode(address node) external view returns (IShardRegistry.Node memory);
}

/// @title StorageRewards
/// @notice Storage deals for the pieces of private files (docs/storage.md): an owner escrows a reward per epoch
/// for one piece held by one registered node. Epochs run on a clock from the deal's start; each epoch is settled
/// by one challenge naming a random Merkle leaf of the piece, opened by the owner or by the node itself once the
/// epoch has begun, so a node is never left unpaid for lack of a challenger. The node answers on chain with the
/// leaf's bytes and its proof against the piece's root (sha256, as shardnet.store.private.merkle): a passed
/// challenge pays the epoch to the node; an unanswered one (the node lost the piece) returns it to the owner.
/// Closing a deal refunds only the epochs that have not begun. Balances are pulled with `withdraw`.
/// @dev Separate from ShardRegistry (near the bytecode limit); it only reads the registry's node records. Every
/// call settles at most one epoch: no loops over epochs or deals.
contract StorageRewards {
    struct Deal {
        address owner;
        address node;
        bytes32 root;           // Merkle root of the piece (shardnet.store.private.merkle)
        uint64 leaves;          // leaf count of that tree
        uint64 start;           // when epoch 0 begins (the open's block time)
        uint64 epochSeconds;    // length of an epoch
        uint64 funded;          // epochs paid for (shrinks to the epochs begun when the owner closes)
        uint64 epochs;          // epochs whose challenge was opened so far (the next to open is `epochs`)
        uint64 openBlock;       // block of the open challenge: its hash draws the leaf (0: none open)
        uint64 deadline;        // when the open challenge may be expired (0: none open)
        uint256 rewardPerEpoch;
        uint256 escrow;         // what is left to pay: (funded - epochs) epochs, plus the open one
    }

    INodeDirectory public immutable registry;
    uint64 public immutable responseWindow;

    Deal[] private _deals;
    mapping(address account => uint256) public claimable;

    event DealOpened(uint256 indexed dealId, address indexed owner, address indexed node, bytes32 root, uint64 leaves, uint256 rewardPerEpoch, uint256 escrow);
    event Challenged(uint256 indexed dealId, uint64 epoch, uint64 openBlock, uint64 deadline, address by);
    event ChallengePassed(uint256 indexed dealId, uint64 epoch, uint64 leaf, uint256 paid);
    event ChallengeFailed(uint256 indexed dealId, uint64 epoch, uint256 refunded);
    event DealClosed(uint256 indexed dealId, uint256 refunded, uint64 epochsKept);
    event Withdrawn(address indexed account, uint256 amount);

    error StorageRewardsNodeNotEligible(address node);
    error StorageRewardsBadDeal(string reason);
    error StorageRewardsNotYours(uint256 dealId, address caller);
    error StorageRewardsChallengeOpen(uint256 dealId, uint64 deadline);
    error StorageRewardsNoChallenge(uint256 dealId);
    error StorageRewardsEpochNotBegun(uint256 dealId, uint64 epoch, uint64 beginsAt);
    error StorageRewardsTooLate(uint256 dealId, uint64 deadline);
    error StorageRewardsTooEarly(uint256 dealId, uint64 deadline);
    error StorageRewardsBadProof(uint256 dealId, uint64 leaf);
    error StorageRewardsNothingToWithdraw(address account);
    error StorageRewardsTransferFailed(address account, uint256 amount);

    constructor(address registry_, uint64 responseWindow_) {
        if (registry_ == address(0) || responseWindow_ == 0) revert StorageRewardsBadDeal("registry and window required");
        registry = INodeDirectory(registry_);
        responseWindow = responseWindow_;
    }

    /// @notice Escrow `msg.value` (a whole number of epochs' rewards) for `node` holding the piece whose Merkle root
    /// is `root` over `leaves` leaves; epoch 0 begins now and each lasts `epochSeconds`.
    /// @dev Emits a {DealOpened} event.
    function openDeal(address node, bytes32 root, uint64 leaves, uint256 rewardPerEpoch, uint64 epochSeconds) external payable returns (uint256 dealId) {
        _requireEligible(node);
        if (leaves == 0 || rewardPerEpoch == 0 || epochSeconds == 0) revert StorageRewardsBadDeal("leaves, reward and epoch length required");
        if (msg.value == 0 || msg.value % rewardPerEpoch != 0) revert StorageRewardsBadDeal("escrow must be a whole number of epochs");
        uint256 funded = msg.value / rewardPerEpoch;
        if (funded > type(uint64).max) revert StorageRewardsBadDeal("too many epochs");
        dealId = _deals.length;
        _deals.push(Deal(msg.sender, node, root, leaves, uint64(block.timestamp), epochSeconds, uint64(funded), 0, 0, 0, rewardPerEpoch, msg.value));
        emit DealOpened(dealId, msg.sender, node, root, leaves, rewardPerEpoch, msg.value);
    }

    /// @notice The owner or the node opens the challenge of the next epoch, once that epoch has begun. The leaf is
    /// drawn from the hash of this transaction's block, which neither party knows when sending it.
    /// @dev Emits a {Challenged} event.
    function challenge(uint256 dealId) external returns (uint64 epoch) {
        Deal storage d = _deal(dealId);
        if (msg.sender != d.owner && msg.sender != d.node) revert StorageRewardsNotYours(dealId, msg.sender);
        if (d.deadline != 0) revert StorageRewardsChallengeOpen(dealId, d.deadline);
        epoch = d.epochs;
        if (epoch >= d.funded) revert StorageRewardsBadDeal("every funded epoch is settled");
        uint64 beginsAt = d.start + epoch * d.epochSeconds;
        if (block.timestamp < beginsAt) revert StorageRewardsEpochNotBegun(dealId, epoch, beginsAt);
        d.openBlock = uint64(block.number);
        d.deadline = uint64(block.timestamp) + responseWindow;
        d.epochs = epoch + 1;
        emit Challenged(dealId, epoch, d.openBlock, d.deadline, msg.sender);
    }

    /// @notice The leaf the open challenge asks for; known from the block after the one that opened it, for 256 blocks.
    function challengeLeaf(uint256 dealId) public view returns (uint64) {
        Deal storage d = _deal(dealId);
        if (d.deadline == 0) revert StorageRewardsNoChallenge(dealId);
        bytes32 seed = blockhash(d.openBlock);
        if (seed == bytes32(0)) revert StorageRewardsTooLate(dealId, d.deadline); // same block, or over 256 blocks ago
        return uint64(uint256(keccak256(abi.encode(seed, dealId, d.epochs))) % d.leaves);
    }

    /// @notice The node, still registered and not jailed, answers the open challenge with the leaf's bytes and
    /// its Merkle proof; pays the epoch.
    /// @dev Emits a {ChallengePassed} event.
    function respond(uint256 dealId, bytes calldata segment, bytes32[] calldata proof) external {
        Deal storage d = _deal(dealId);
        if (msg.sender != d.node) revert StorageRewardsNotYours(dealId, msg.sender);
        if (d.deadline == 0) revert StorageRewardsNoChallenge(dealId);
        if (block.timestamp > d.deadline) revert StorageRewardsTooLate(dealId, d.deadline);
        _requireEligible(d.node);
        uint64 leaf = challengeLeaf(dealId);
        if (!_verify(segment, leaf, d.leaves, proof, d.root)) revert StorageRewardsBadProof(dealId, leaf);
        uint256 pay = d.rewardPerEpoch;
        d.escrow -= pay;
        d.deadline = 0;
        d.openBlock = 0;
        claimable[d.node] += pay;
        emit ChallengePassed(dealId, d.epochs - 1, leaf, pay);
    }

    /// @notice Anyone ends an unanswered challenge after its deadline: the epoch's reward goes back to the owner.
    /// @dev Emits a {ChallengeFailed} event.
    function expire(uint256 dealId) external {
        Deal storage d = _deal(dealId);
        if (d.deadline == 0) revert StorageRewardsNoChallenge(dealId);
        if (block.timestamp <= d.deadline) revert StorageRewardsTooEarly(dealId, d.deadline);
        uint256 refund = d.rewardPerEpoch;
        d.escrow -= refund;
        d.deadline = 0;
        d.openBlock = 0;
        claimable[d.owner] += refund;
        emit ChallengeFailed(dealId, d.epochs - 1, refund);
    }

    /// @notice The owner ends a deal: the epochs that have not begun are refunded; those begun (the current one
    /// included) stay in escrow, to be challenged by the node or the owner as usual.
    /// @dev Emits a {DealClosed} event.
    function closeDeal(uint256 dealId) external {
        Deal storage d = _deal(dealId);
        if (msg.sender != d.owner) revert StorageRewardsNotYours(dealId, msg.sender);
        uint256 begun = (block.timestamp - d.start) / d.epochSeconds + 1;
        uint64 keep = begun < d.funded ? uint64(begun) : d.funded;
        if (keep < d.epochs) keep = d.epochs;
        uint256 refund = uint256(d.funded - keep) * d.rewardPerEpoch;
        d.funded = keep;
        d.escrow -= refund;
        claimable[d.owner] += refund;
        emit DealClosed(dealId, refund, keep);
    }

    /// @notice Pull what the caller is owed (rewards, refunds).
    /// @dev Emits a {Withdrawn} event.
    function withdraw() external {
        uint256 amount = claimable[msg.sender];
        if (amount == 0) revert StorageRewardsNothingToWithdraw(msg.sender);
        claimable[msg.sender] = 0;
        emit Withdrawn(msg.sender, amount);
        (bool ok, ) = msg.sender.call{value: amount}("");
        if (!ok) revert StorageRewardsTransferFailed(msg.sender, amount);
    }

    function getDeal(uint256 dealId) external view returns (Deal memory) {
        return _deal(dealId);
    }

    function dealCount() external view returns (uint256) {
        return _deals.length;
    }

    function _requireEligible(address node) private view {
        IShardRegistry.Node memory n = registry.getNode(node);
        if (!n.registered || n.jailed) revert StorageRewardsNodeNotEligible(node);
    }

    function _deal(uint256 dealId) private view returns (Deal storage) {
        if (dealId >= _deals.length) revert StorageRewardsBadDeal("no such deal");
        return _deals[dealId];
    }

    /// @dev The rule of shardnet.store.private.merkle.verify_proof: a level with an odd count carries its last node up.
    function _verify(bytes calldata segment, uint64 index, uint64 width, bytes32[] calldata proof, bytes32 root) private pure returns (bool) {
        if (segment.length > 1024) return false;
        bytes32 node = sha256(segment);
        uint256 used = 0;
        while (width > 1) {
            uint64 sibling = index ^ 1;
            if (sibling < width) {
                if (used >= proof.length) return false;
                node = index % 2 == 0 ? sha256(abi.encodePacked(node, proof[used])) : sha256(abi.encodePacked(proof[used], node));
                used += 1;
            }
            index /= 2;
            width = (width + 1) / 2;
        }
        return used == proof.length && node == root;
    }
}
