// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.28;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

import {ShardRegistryBase} from "./ShardRegistryBase.sol";
import {DrawQuery, ShardEvidence} from "./ShardEvidence.sol";

/// @title ShardDisputes
/// @notice The registry's posted commitments, slashing and paid verification (see {IShardRegistry}). The registry
/// deploys this contract in its constructor with its own parameters and forwards these functions to it by
/// DELEGATECALL: they run on the registry's storage, as the registry, with its events and errors. Called directly,
/// this contract acts on its own empty state (no job, no stake, no ether): nothing to gain.
contract ShardDisputes is ShardRegistryBase {
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
    {}

    /// @notice See {IShardRegistry}.
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

    /// @notice See {IShardRegistry}.
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

    /// @notice See {IShardRegistry}.
    function slash(SlashEvidence calldata e) external {
        SignedCommitment calldata c = e.commitment;
        bytes32 key = keccak256(abi.encode(e.jobId, c.node));
        if (_slashed[key]) revert ShardRegistryAlreadySlashed(e.jobId, c.node);
        _checkClosed(e.jobId, e.job, e.closeBlock);
        _checkSignature(e.jobId, c, 0);
        // an innocent verdict's leafIndex (2**32 - 1) is never below c.steps: it proves nothing
        if (!ShardEvidence.verifyMerkle(e.leaf, e.proof, c.root, e.leafIndex, c.steps)) {
            revert ShardRegistryBadMerkleProof(e.jobId, e.leafIndex);
        }
        (address[] memory drawn, uint256[] memory stakes) =
            _draw(e.jobId, e.job.modelId, e.closeBlock, c.node, c.start, c.end, c.root, MAX_VERIFIERS);
        if (drawn.length < MIN_VERIFIERS) revert ShardRegistryNotEnoughVerifiers(drawn.length, MIN_VERIFIERS);
        uint256 total = 0;
        for (uint256 k = 0; k < stakes.length; ++k) total += stakes[k];
        bytes32 digest = _hashTypedDataV4(ShardEvidence.verdictHash(e.jobId, c.node, c.root, e.leafIndex, e.leaf));
        (uint256 guilty, ) = ShardEvidence.countSigners(digest, e.verdicts, drawn, stakes);
        if (guilty * 2 <= total) revert ShardRegistryNoMajority(guilty, total);
        _slashed[key] = true;
        uint256 amount = _takeStake(c.node);
        _credit(e.job.client, amount);
        emit NodeSlashed(c.node, e.jobId, e.job.client, amount, c.root, e.leafIndex, guilty, total);
    }

    /// @notice See {IShardRegistry}.
    /// @dev No reentrancy guard: it only credits claimable balances (no ether leaves, the library is this code's own).
    function payVerifiers(VerificationPayment[] calldata payments) external {
        if (payments.length > MAX_PAY_BATCH) revert ShardRegistryBatchTooLarge(payments.length, MAX_PAY_BATCH);
        bytes32 domainSeparator = _domainSeparatorV4();
        for (uint256 k = 0; k < payments.length; ++k) {
            VerificationPayment calldata p = payments[k];
            if (p.job.coordinator != msg.sender) revert ShardRegistryNotJobCoordinator(p.jobId, msg.sender);
            uint256 slot = _heldShare(p.jobId, p.job, p.closeBlock);
            uint256 share = _verificationShare(p.job);
            (uint256 paid, uint256 verdicts) = _payHopVerdicts(p, domainSeparator, share);
            _jobs[p.jobId] = slot | _VERIFY_SPENT; // paid <= share: every verdict's pay is capped by what is left
            _credit(p.job.client, share - paid);
            emit VerificationPaid(p.jobId, paid, share - paid, verdicts);
        }
    }

    /// @notice See {IShardRegistry}.
    function refundVerification(uint256 jobId, JobRecord calldata job, uint64 closeBlock) external {
        uint256 slot = _heldShare(jobId, job, closeBlock);
        uint256 until = uint256(closeBlock) + _DRAW_REACH;
        if (block.number <= until) revert ShardRegistryVerificationOpen(jobId, until);
        uint256 share = _verificationShare(job);
        _jobs[jobId] = slot | _VERIFY_SPENT;
        _credit(job.client, share);
        emit VerificationPaid(jobId, 0, share, 0);
    }

    /// @dev The job's slot, checked: closed in `closeBlock` with its verification share held and not yet spent.
    function _heldShare(uint256 jobId, JobRecord calldata job, uint64 closeBlock) private view returns (uint256 slot) {
        _checkClosed(jobId, job, closeBlock);
        slot = _jobs[jobId];
        if (slot & (_VERIFY_HELD | _VERIFY_SPENT) != _VERIFY_HELD) revert ShardRegistryNoVerificationHeld(jobId);
    }

    /// @dev Credits every drawn verifier's verdict on each hop of `p`, `verifyBps` of the hop's pay each while the
    /// job's `share` lasts (in calldata order: the last may get less, or nothing); returns what was paid and how many
    /// verdicts were checked.
    function _payHopVerdicts(VerificationPayment calldata p, bytes32 domainSeparator, uint256 share)
        private
        returns (uint256 paid, uint256 verdicts)
    {
        uint256 n = p.hops.length;
        if (n > MAX_HOPS) revert ShardRegistryTooManyHops(p.jobId, n, MAX_HOPS);
        uint256 previousEnd = 0;
        for (uint256 i = 0; i < n; ++i) {
            HopVerdicts calldata h = p.hops[i];
            SignedCommitment calldata c = h.commitment;
            if (c.start < previousEnd) revert ShardRegistryHopsNotSorted(p.jobId, i);
            previousEnd = c.end;
            _checkHop(p.jobId, p.job, c, i);
            if (h.picks < MIN_VERIFIERS || h.picks > MAX_VERIFIERS) revert ShardRegistryInvalidDrawSize(p.jobId, h.picks);
            address[] memory signers = ShardEvidence.verdictSigners(
                _modelLive[p.job.modelId],
                _assignments,
                _weights,
                DrawQuery(p.jobId, p.closeBlock, c.node, c.start, c.end, c.root, h.picks),
                domainSeparator,
                h.verdicts
            );
            uint256 pay = (_hopPay(p.job, c) * _verifyBps) / _BPS;
            for (uint256 j = 0; j < signers.length; ++j) {
                uint256 due = _take(pay, share - paid); // paid <= share throughout
                _credit(signers[j], due);
                paid += due;
            }
            verdicts += signers.length;
        }
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
}
