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
