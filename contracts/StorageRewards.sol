// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {IShardRegistry} from "./IShardRegistry.sol";

/// @notice The one registry view StorageRewards reads: whether a storage node is registered and not jailed.
interface INodeDirectory {
    function getNode(address node) external view returns (IShardRegistry.Node memory);
}

/// @title StorageRewards
/// @notice Storage deals for the pieces of private files (docs/storage.md): an owner escrows a reward per epoch
/// for one piece held by one registered node; each epoch the owner posts a challenge naming a random Merkle
/// leaf of the piece; the node answers on chain with the leaf's bytes and its proof against the piece's root
/// (sha256, as shardnet.store.private.merkle). A passed challenge pays the epoch's reward to the node; an
/// unanswered one (the node lost the piece) returns it to the owner. Balances are pulled with `withdraw`.
/// @dev Separate from ShardRegistry (near the bytecode limit); it only reads the registry's node records.
contract StorageRewards {
    struct Deal {
        address owner;
        address node;
        bytes32 root;           // Merkle root of the piece (shardnet.store.private.merkle)
        uint64 leaves;          // leaf count of that tree
        uint64 challengeLeaf;   // leaf asked by the open challenge
        uint64 deadline;        // when the open challenge may be expired (0: none open)
        uint64 epochs;          // challenges posted so far
        uint256 rewardPerEpoch;
        uint256 escrow;         // what is left to pay
    }

    INodeDirectory public immutable registry;
    uint64 public immutable responseWindow;

    Deal[] private _deals;
    mapping(address account => uint256) public claimable;

    event DealOpened(uint256 indexed dealId, address indexed owner, address indexed node, bytes32 root, uint64 leaves, uint256 rewardPerEpoch, uint256 escrow);
    event Challenged(uint256 indexed dealId, uint64 epoch, uint64 leaf, uint64 deadline);
    event ChallengePassed(uint256 indexed dealId, uint64 epoch, uint64 leaf, uint256 paid);
    event ChallengeFailed(uint256 indexed dealId, uint64 epoch, uint64 leaf, uint256 refunded);
    event DealClosed(uint256 indexed dealId, uint256 refunded);
    event Withdrawn(address indexed account, uint256 amount);

    error StorageRewardsNodeNotEligible(address node);
    error StorageRewardsBadDeal(string reason);
    error StorageRewardsNotYours(uint256 dealId, address caller);
    error StorageRewardsChallengeOpen(uint256 dealId, uint64 deadline);
    error StorageRewardsNoChallenge(uint256 dealId);
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

    /// @notice Escrow `msg.value` for `node` holding the piece whose Merkle root is `root` over `leaves` leaves.
    /// @dev Emits a {DealOpened} event.
    function openDeal(address node, bytes32 root, uint64 leaves, uint256 rewardPerEpoch) external payable returns (uint256 dealId) {
        IShardRegistry.Node memory n = registry.getNode(node);
        if (!n.registered || n.jailed) revert StorageRewardsNodeNotEligible(node);
        if (leaves == 0 || rewardPerEpoch == 0 || msg.value < rewardPerEpoch) revert StorageRewardsBadDeal("leaves, reward and escrow >= reward required");
        dealId = _deals.length;
        _deals.push(Deal(msg.sender, node, root, leaves, 0, 0, 0, rewardPerEpoch, msg.value));
        emit DealOpened(dealId, msg.sender, node, root, leaves, rewardPerEpoch, msg.value);
    }

    /// @notice The owner opens this epoch's challenge: a leaf drawn from the previous block hash.
    /// @dev Emits a {Challenged} event.
    function challenge(uint256 dealId) external returns (uint64 leaf) {
        Deal storage d = _deal(dealId);
        if (msg.sender != d.owner) revert StorageRewardsNotYours(dealId, msg.sender);
        if (d.deadline != 0) revert StorageRewardsChallengeOpen(dealId, d.deadline);
        if (d.escrow < d.rewardPerEpoch) revert StorageRewardsBadDeal("escrow spent");
        leaf = uint64(uint256(keccak256(abi.encode(blockhash(block.number - 1), dealId, d.epochs))) % d.leaves);
        d.challengeLeaf = leaf;
        d.deadline = uint64(block.timestamp) + responseWindow;
        d.epochs += 1;
        emit Challenged(dealId, d.epochs, leaf, d.deadline);
    }

    /// @notice The node answers the open challenge with the leaf's bytes and its Merkle proof; pays the epoch.
    /// @dev Emits a {ChallengePassed} event.
    function respond(uint256 dealId, bytes calldata segment, bytes32[] calldata proof) external {
        Deal storage d = _deal(dealId);
        if (msg.sender != d.node) revert StorageRewardsNotYours(dealId, msg.sender);
        if (d.deadline == 0) revert StorageRewardsNoChallenge(dealId);
        if (block.timestamp > d.deadline) revert StorageRewardsTooLate(dealId, d.deadline);
        if (!_verify(segment, d.challengeLeaf, d.leaves, proof, d.root)) revert StorageRewardsBadProof(dealId, d.challengeLeaf);
        uint256 pay = d.rewardPerEpoch;
        d.escrow -= pay;
        d.deadline = 0;
        claimable[d.node] += pay;
        emit ChallengePassed(dealId, d.epochs, d.challengeLeaf, pay);
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
        claimable[d.owner] += refund;
        emit ChallengeFailed(dealId, d.epochs, d.challengeLeaf, refund);
    }

    /// @notice The owner ends a deal with no open challenge; the rest of the escrow becomes claimable by the owner.
    /// @dev Emits a {DealClosed} event.
    function closeDeal(uint256 dealId) external {
        Deal storage d = _deal(dealId);
        if (msg.sender != d.owner) revert StorageRewardsNotYours(dealId, msg.sender);
        if (d.deadline != 0) revert StorageRewardsChallengeOpen(dealId, d.deadline);
        uint256 refund = d.escrow;
        d.escrow = 0;
        claimable[d.owner] += refund;
        emit DealClosed(dealId, refund);
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
