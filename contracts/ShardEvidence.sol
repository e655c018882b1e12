// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

/// @title ShardEvidence
/// @notice Pure helpers of the registry: EIP-712 struct hashes of what nodes, coordinators and verifiers sign,
/// the Merkle proof check of shardnet.wire.commitment, and the stake-weighted draw of verifiers.
library ShardEvidence {
    bytes32 internal constant COMMITMENT_TYPEHASH =
        keccak256("Commitment(uint256 jobId,uint32 start,uint32 end,uint32 positions,uint32 steps,bytes32 root)");
    bytes32 internal constant TICKET_TYPEHASH = keccak256(
        "Ticket(address worker,string sessionId,uint256 jobId,uint32 start,uint32 end,uint32 maxPositions,uint64 expiresAt)"
    );
    bytes32 internal constant VERDICT_TYPEHASH =
        keccak256("Verdict(uint256 jobId,address accused,bytes32 root,uint32 leafIndex,bytes32 leaf)");

    function commitmentHash(
        uint256 jobId,
        uint32 start,
        uint32 end,
        uint32 positions,
        uint32 steps,
        bytes32 root
    ) internal pure returns (bytes32) {
        return keccak256(abi.encode(COMMITMENT_TYPEHASH, jobId, start, end, positions, steps, root));
    }

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

    /// @dev True when `proof` shows `leaf` at `index` of `count` leaves under `root`: parents are
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

    /// @dev Draws up to `picks` of `candidates` without replacement, each draw weighted by stake, from `seed`.
    /// Candidates with zero stake are never drawn. Returns the drawn addresses and stakes.
    function draw(address[] memory candidates, uint256[] memory stakes, uint256 count, uint256 picks, bytes32 seed)
        internal
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
}
