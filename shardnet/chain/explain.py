"""The registry's custom errors told as sentences a user can act on.

    explain(revert)   # "submitJob reverted: the amount is zero (ShardRegistryZeroAmount()): ..."

The decoded error (name and arguments) stays at the end in parentheses, for bug reports. Unknown errors
are shown as decoded.
"""

from __future__ import annotations

from shardnet.chain.errors import ContractRevert

_PREFIX = "ShardRegistry"

#: error name (without the contract prefix) -> sentence; `{name}` fields are the error's arguments.
SENTENCES: dict[str, str] = {
    "ZeroAmount": "an amount that must be positive is zero (e.g. --max-tokens 0 or a zero stake): give at least 1",
    "EscrowTooLow": "the payment {provided} wei is below the quote {required} wei",
    "MaxTokensTooLarge": "max tokens {maxTokens} is more than this registry allows ({limit})",
    "InsufficientStake": "the stake {provided} wei is below the registry's minimum {required} wei",
    "UnknownModel": "no model {modelId} is registered; `shardnet chain status` lists the models",
    "UnknownJob": "no job {jobId} exists on this chain; `shardnet jobs` lists them",
    "NotJobClient": "job {jobId} was submitted by another account, not {account}: use the key that paid for it",
    "InvalidJobStatus": "job {jobId} is not in a state that allows this (it may be finalized, failed or cancelled "
    "already): `shardnet jobs` shows its status",
    "DeadlineNotReached": "job {jobId}'s deadline has not passed on the chain's clock yet: try again later",
    "NothingToClaim": "{account} has nothing to claim: refunds and payouts become claimable when jobs end",
    "NotRegistered": "{node} is not a registered node: `worker stake --amount-wei N` registers it",
    "AlreadyRegistered": "{node} is registered already: `worker stake` adds stake to it",
    "StillUnbonding": "the stake is still unbonding: withdraw it after the unbonding period",
    "NothingToWithdraw": "{node} has no unbonded stake to withdraw: `worker unstake` first, then wait the unbonding period",
    "UnstakeTooLarge": "cannot unbond {requested} wei: only {available} wei is staked",
    "HasLiveAssignments": "{node} still serves {count} shard assignments: stop the worker (it releases them) first",
    "HasOpenJobs": "{node} has {count} jobs not settled yet: wait for them to end",
    "NodeJailed": "{node} was slashed and is jailed",
    "NotCoordinator": "{account} is not an approved coordinator of this registry",
    "Unauthorized": "{account} may not do this (only the registry's owner may)",
    "VerdictNotFromDrawnVerifier": "verdict {index} is signed by {signer}, not by a verifier the registry drew for "
    "that hop (or by one of them twice): send only the verdicts of `drawVerifiers`' first `picks` addresses",
    "TooManyVerdicts": "job {jobId}: {count} verdicts on one hop, more than the {maximum} verifiers drawn for it",
    "InvalidDrawSize": "job {jobId}: a hop's draw size {picks} is outside MIN_VERIFIERS..MAX_VERIFIERS",
    "NoVerificationHeld": "job {jobId} has no verification share left: its settlement held none (failed, cancelled, "
    "or too little escrow), or it was paid or refunded already",
    "VerificationOpen": "job {jobId}'s verification share can still be paid to its verifiers: anyone may refund it "
    "to the client after block {untilBlock}",
    "BatchTooLarge": "{count} items in one call, more than the registry's {maximum}: split the batch",
    "RandomnessUnavailable": "the draw's randomness (blockhash of block {blockNumber}) cannot be read: wait for that "
    "block, or it is more than 256 blocks old and the job can no longer be disputed or its verifiers paid",
    "HopsNotSorted": "job {jobId}: hop {hopIndex} overlaps or precedes the one before it: hops go in layer order, "
    "with disjoint spans",
    "BadCommitmentSignature": "job {jobId}: hop {hopIndex}'s commitment is not signed by its node {node}",
    "InvalidParameter": "the deployment parameter {name} is out of range: `shardnet deploy --help` gives "
    "each one's bounds",
    "AmountTooLarge": "{amount} wei is more than the registry can hold in one place ({maximum} wei): use less",
    "StringTooLong": "the {field} is {length} bytes, more than the {maximum} allowed: shorten it",
    "InvalidModel": "the model cannot be registered: {reason}",
    "InvalidSpan": "layers [{start}, {end}) are not a span of this model's {numLayers} layers: give 0 <= start < end "
    "<= {numLayers}",
    "TooManyAssignments": "{node} already holds {count} shard assignments (released ones count while a dispute can "
    "still reach them): release one, or wait about 258 blocks after the last release",
    "ModelFull": "model {modelId} has {count} shard assignments, the most it may: serve another model or wait for "
    "released ones to age out",
    "UnknownAssignment": "no shard assignment {assignmentId} exists: `shardnet chain status` lists them",
    "NotAssignmentOwner": "assignment {assignmentId} belongs to another node, not {account}: use that node's key",
    "AssignmentNotLive": "assignment {assignmentId} is released already",
    "InvalidHopSpan": "job {jobId}: hop {hopIndex}'s layers [{start}, {end}) are empty or beyond the model's layers",
    "JobRecordMismatch": "the job record sent for job {jobId} is not the one the registry stored (or the closing "
    "block is wrong): read it again from the JobSubmitted event and the settlement's block",
    "NotJobCoordinator": "{account} is not the coordinator job {jobId} named: only that coordinator may do this",
    "TooManyHops": "job {jobId}: {count} hops or posts, more than the {maximum} a job may have",
    "PositionsTooHigh": "job {jobId}: hop {hopIndex} bills {positions} positions, more than the {maximum} its record "
    "or ticket allows",
    "BadTicket": "job {jobId}: {worker}'s ticket is not signed by the job's coordinator for this hop",
    "NotHopNode": "job {jobId}: {account} may post only a commitment it signed itself as the hop's node",
    "AlreadyCommitted": "job {jobId}: {node} posted this hop already",
    "PostWindowClosed": "job {jobId}'s deadline ({deadline}) has passed: its hops can no longer be posted",
    "TicketExpired": "job {jobId}: the ticket expired at {expiresAt} and the dispute window after it has passed",
    "NothingToCollect": "job {jobId}: {node} has no provisional post of this hop to collect (never posted, paid, or "
    "replaced by the settlement)",
    "PostProvisional": "job {jobId}: {node}'s post is provisional until {payableAt} (unix time): collect it then",
    "JobNotClosed": "job {jobId} is still open: its hops can be disputed once it is settled, failed or cancelled",
    "AlreadySlashed": "{node} was slashed for job {jobId} already",
    "BadMerkleProof": "job {jobId}: the proof does not show leaf {leafIndex} under the commitment's root (an "
    "innocent verdict's index never does)",
    "NotEnoughVerifiers": "only {drawn} verifiers could be drawn for this hop, fewer than the {required} a slash "
    "needs: more nodes must stake on its layers",
    "NoMajority": "the guilty verdicts weigh {guiltyStake} of the {drawnStake} drawn stake, not more than half: "
    "gather the other drawn verifiers' verdicts",
    "InvalidRecipient": "{to} cannot receive the fees: give another address",
    "TransferFailed": "sending {amount} wei to {to} failed (a contract refusing ether?): the balance stays claimable",
}


def explain(revert: ContractRevert) -> str:
    """A sentence for `revert`, ending with the decoded error in parentheses."""
    name = revert.error[len(_PREFIX) :] if revert.error.startswith(_PREFIX) else revert.error
    template = SENTENCES.get(name)
    if template is None:
        return str(revert)
    try:
        sentence = template.format(**revert.args)
    except (KeyError, IndexError):
        sentence = template
    where = f"{revert.function} was refused: " if revert.function else ""
    return f"{where}{sentence} ({revert.describe().removeprefix(f'{revert.function} reverted: ')})"
