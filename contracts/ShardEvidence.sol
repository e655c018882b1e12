// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

import {IShardRegistryTypes} from "./IShardRegistry.sol";

/// @dev One shard assignment as the registry stores it (the library reads the registry's array of them).
struct AssignmentRecord {
    address node; // slot 0
    uint16 start;
    uint16 end;
    bool live;
    uint56 modelId;
    uint32 nodeIndex; // slot 1: position in its node's live list (a model's list is scanned, never indexed)
    uint64 announcedAt; // block: an assignment announced after a job closed is not drawn for its disputes
    uint64 releasedAt; // block (0: live): one released after a job closed is still drawn for its disputes
}

/// @dev What a draw of verifiers is about: the accused's hop of a closed job, and how many to draw.
struct DrawQuery {
    uint256 jobId;
    uint64 closeBlock;
    address accused;
    uint32 start;
    uint32 end;
    bytes32 root;
    uint256 picks;
}

/// @title ShardEvidence
/// @notice The registry's evidence code: EIP-712 struct hashes of what nodes, coordinators and verifiers sign, the
/// Merkle proof check of shardnet.wire.commitment, the stake-weighted draw of verifiers and the check of their
/// signed verdicts (internal: compiled into {ShardDisputes}, and the draw also into the registry's drawVerifiers).
library ShardEvidence {
    bytes32 internal constant COMMITMENT_TYPEHASH =
        keccak256("Commitment(uint256 jobId,uint32 start,uint32 end,uint32 positions,uint32 steps,bytes32 root)");
    bytes32 internal constant TICKET_TYPEHASH = keccak256(
        "Ticket(address worker,string sessionId,uint256 jobId,uint32 start,uint32 end,uint32 maxPositions,uint64 expiresAt)"
    );
    bytes32 internal constant VERDICT_TYPEHASH =
        keccak256("Verdict(uint256 jobId,address accused,bytes32 root,uint32 leafIndex,bytes32 leaf)");
    /// @dev blockhash reaches 256 blocks back (the registry's DRAW_DELAY is added to it).
    uint64 internal constant DRAW_DELAY = 2;

    function ticketHash(
        address worker,
        string calldata sessionId,
        uint256 jobId,
        uint32 start,
        uint32 end,
        uint32 maxPositions,
        uint64 expiresAt
    ) internal pure returns (bytes32) {
        return keccak256(
            abi.encode(TICKET_TYPEHASH, worker, keccak256(bytes(sessionId)), jobId, start, end, maxPositions, expiresAt)
        );
    }

    function verdictHash(uint256 jobId, address accused, bytes32 root, uint32 leafIndex, bytes32 leaf)
        internal
        pure
        returns (bytes32)
    {
        return keccak256(abi.encode(VERDICT_TYPEHASH, jobId, accused, root, leafIndex, leaf));
    }

    /// @notice True when `proof` shows `leaf` at `index` of `count` leaves under `root`: parents are
    /// keccak256(left || right); a last node without a sibling is promoted unchanged (no proof element).
    function verifyMerkle(bytes32 leaf, bytes32[] calldata proof, bytes32 root, uint256 index, uint256 count)
        internal
        pure
        returns (bool)
    {
        if (index >= count) return false;
        bytes32 node = leaf;
        uint256 used = 0;
        uint256 width = count;
        while (width > 1) {
            uint256 sibling = index ^ 1;
            if (sibling < width) {
                if (used == proof.length) return false;
                bytes32 other = proof[used++];
                node = index % 2 == 0
                    ? keccak256(abi.encodePacked(node, other))
                    : keccak256(abi.encodePacked(other, node));
            }
            index /= 2;
            width = (width + 1) / 2;
        }
        return used == proof.length && node == root;
    }

    /// @notice The verifiers drawn for a dispute about `q.accused`'s hop: distinct nodes other than the accused that
    /// held, at the end of block `q.closeBlock`, an assignment (of `live`, the model's list) covering [start, end)
    /// (announced by then, not released by then), weighted by their stake + unbonding stake at that block (`weights`
    /// checkpoints); up to `q.picks` drawn without replacement from blockhash(closeBlock + DRAW_DELAY). Nothing done
    /// once the randomness is public (stake moves, releases, jails, new nodes, the
    /// registry's pruning of its lists) adds, removes, reweighs or reorders a candidate.
    /// The first k of a draw of n >= k picks are the draw of k picks (each pick depends only on the seed, its rank and
    /// the stakes not drawn before it).
    function drawVerifiers(
        uint256[] storage live,
        AssignmentRecord[] storage assignments,
        mapping(address => uint256[]) storage weights,
        DrawQuery memory q
    ) internal view returns (address[] memory drawn, uint256[] memory drawnStakes) {
        uint256 at = uint256(q.closeBlock) + DRAW_DELAY;
        bytes32 randomness = at < block.number ? blockhash(at) : bytes32(0);
        if (randomness == bytes32(0)) revert IShardRegistryTypes.ShardRegistryRandomnessUnavailable(at);
        address[] memory candidates = new address[](live.length);
        uint256[] memory stakes = new uint256[](live.length);
        uint256 count = 0;
        for (uint256 i = 0; i < live.length; ++i) {
            AssignmentRecord storage a = assignments[live[i] - 1];
            // only what was bonded when the job closed: the randomness is public two blocks later
            if (a.node == q.accused || a.start > q.start || a.end < q.end || a.announcedAt > q.closeBlock) continue;
            if (!a.live && a.releasedAt <= q.closeBlock) continue; // released before the close
            uint256 weight = _weightAt(weights[a.node], q.closeBlock);
            if (weight == 0 || _uncountedIndex(candidates, a.node, 0) < count) continue; // a node counts once
            candidates[count] = a.node;
            stakes[count] = weight;
            ++count;
        }
        bytes32 seed = keccak256(abi.encode(randomness, q.jobId, q.accused, q.root));
        return _draw(candidates, stakes, count, q.picks, seed);
    }

    /// @notice The stake of the drawn verifiers that signed `digest` (each counted once) and the bit mask of their
    /// indices in `drawn`; reverts with {IShardRegistryTypes.ShardRegistryVerdictNotFromDrawnVerifier} for a signature of
    /// anyone else (or a second one of the same verifier). At most `drawn.length` signatures are read.
    function countSigners(
        bytes32 digest,
        IShardRegistryTypes.VerdictSignature[] calldata verdicts,
        address[] memory drawn,
        uint256[] memory stakes
    ) internal pure returns (uint256 signed, uint256 counted) {
        for (uint256 i = 0; i < verdicts.length && i < drawn.length; ++i) {
            uint256 j = drawnSigner(digest, verdicts[i].r, verdicts[i].vs, drawn, counted, i);
            counted |= 1 << j;
            signed += stakes[j];
        }
    }

    /// @notice The signers of `verdicts` on the accused's hop `q` (guilty ones on a leaf, innocent ones on leaf
    /// `INNOCENT_LEAF` = 0 with index type(uint32).max), each checked against the draw of `q.picks` verifiers: a
    /// signer not drawn, or drawn but already counted, reverts. At most `q.picks` verdicts.
    function verdictSigners(
        uint256[] storage live,
        AssignmentRecord[] storage assignments,
        mapping(address => uint256[]) storage weights,
        DrawQuery memory q,
        bytes32 domainSeparator,
        IShardRegistryTypes.PaidVerdict[] calldata verdicts
    ) internal view returns (address[] memory signers) {
        (address[] memory drawn, ) = drawVerifiers(live, assignments, weights, q);
        if (verdicts.length > drawn.length) {
            revert IShardRegistryTypes.ShardRegistryTooManyVerdicts(q.jobId, verdicts.length, drawn.length);
        }
        signers = new address[](verdicts.length);
        uint256 counted = 0;
        for (uint256 i = 0; i < verdicts.length; ++i) {
            IShardRegistryTypes.PaidVerdict calldata v = verdicts[i];
            bytes32 structHash = verdictHash(q.jobId, q.accused, q.root, v.leafIndex, v.leaf);
            bytes32 digest = keccak256(abi.encodePacked(hex"1901", domainSeparator, structHash));
            uint256 j = drawnSigner(digest, v.r, v.vs, drawn, counted, i);
            counted |= 1 << j;
            signers[i] = drawn[j];
        }
    }

    /// @dev The index in `drawn` of the signer of `digest`, not marked in `counted`; reverts for anyone else.
    function drawnSigner(
        bytes32 digest,
        bytes32 r,
        bytes32 vs,
        address[] memory drawn,
        uint256 counted,
        uint256 i
    ) internal pure returns (uint256 j) {
        (address signer, , ) = ECDSA.tryRecover(digest, r, vs);
        j = _uncountedIndex(drawn, signer, counted);
        if (j == drawn.length || signer == address(0)) {
            revert IShardRegistryTypes.ShardRegistryVerdictNotFromDrawnVerifier(i, signer);
        }
    }

    /// @dev Draws up to `picks` of `candidates` without replacement, each draw weighted by stake, from `seed`.
    /// Candidates with zero stake are never drawn. Returns the drawn addresses and stakes.
    function _draw(address[] memory candidates, uint256[] memory stakes, uint256 count, uint256 picks, bytes32 seed)
        private
        pure
        returns (address[] memory drawn, uint256[] memory drawnStakes)
    {
        uint256 total = 0;
        for (uint256 i = 0; i < count; ++i) total += stakes[i];
        uint256 n = picks < count ? picks : count;
        drawn = new address[](n);
        drawnStakes = new uint256[](n);
        uint256 got = 0;
        for (; got < n && total != 0; ++got) {
            uint256 ticket = uint256(keccak256(abi.encode(seed, got))) % total;
            uint256 i = 0;
            // The loop ends before `count`: ticket < total == the sum of the remaining stakes.
            while (ticket >= stakes[i]) {
                ticket -= stakes[i];
                ++i;
            }
            drawn[got] = candidates[i];
            drawnStakes[got] = stakes[i];
            total -= stakes[i];
            stakes[i] = 0; // without replacement
        }
        assembly ("memory-safe") {
            mstore(drawn, got)
            mstore(drawnStakes, got)
        }
    }

    /// @dev A node's stake + unbonding stake at the end of block `at` (0 before it registered): a binary search over
    /// its checkpoints (block << 208 | weight, blocks ascending).
    function _weightAt(uint256[] storage history, uint256 at) private view returns (uint256) {
        uint256 low = 0;
        uint256 high = history.length;
        while (low < high) {
            uint256 mid = (low + high) / 2;
            if (history[mid] >> 208 > at) high = mid;
            else low = mid + 1;
        }
        return low == 0 ? 0 : uint208(history[low - 1]);
    }

    /// @dev The index of `signer` among `drawn` not yet marked in `counted`, or drawn.length.
    function _uncountedIndex(address[] memory drawn, address signer, uint256 counted) private pure returns (uint256 j) {
        while (j < drawn.length && (drawn[j] != signer || counted & (1 << j) != 0)) ++j;
    }
}
