"""What the drawn verifiers of one hop answered, and what their answers come to: the first stage, whether the
referees are asked, and the leaf a slash can be sent on (`coordinator.disputes` asks and slashes)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shardnet.chain.commitments import SignedCommitment, verify_verdict
from shardnet.wire.eip712 import CompactSignature, Domain

MIN_VERIFIERS = 2  # ShardRegistry.MIN_VERIFIERS: the first stage of every check


@dataclass(frozen=True)
class VerifierAnswer:
    """One drawn verifier's answer (`guilty` None: no verdict: refused, timed out, or could not check)."""

    verifier: str
    stake: int
    guilty: bool | None
    leaf_index: int | None = None
    signature: CompactSignature | None = None
    note: str = ""
    fault: bool = False
    tokens: dict[str, object] | None = None  # last hop: the verifier's check of the shown tokens


@dataclass(frozen=True)
class DisputeOutcome:
    """What the check of one hop came to."""

    node: str
    answers: list[VerifierAnswer]
    slashed: bool
    tx_hash: str | None = None
    note: str = ""
    drawn: int = 0  # verifiers the registry drew (first stage + referees)
    escalated: bool = False  # the referees were asked (a guilty verdict, a fault or a disagreement first)
    picks: int = 0  # the draw's first `picks` hold every verifier asked (payVerifiers redraws that many)

    @property
    def passes(self) -> int:
        """Verifiers asked to recompute the hop (each one pass over all its positions)."""
        return len(self.answers)

    @property
    def tokens_flagged(self) -> list[str]:
        """The verifiers that found tokens shown to the client that the recomputed logits do not support."""
        return [a.verifier for a in self.answers if a.tokens and a.tokens.get("unsupported")]


def answer_signer(
    data: Mapping[str, Any],
    domain: Domain,
    job_id: int,
    signed: SignedCommitment,
    leaf_index: int,
    leaf: bytes,
) -> tuple[CompactSignature, str]:
    """The signature in a verifier's /v1/verify answer (`data["signature"]`) and the address that signed it: whose
    EIP-712 Verdict it is on leaf `leaf_index` (= `leaf`) of `signed`'s hop, as the registry's `slash` and
    `payVerifiers` recover it (a guilty verdict on the wrong leaf; an innocent one on INNOCENT_LEAF_INDEX). The
    callers compare it with the verifier asked. Raises KeyError (no signature), TypeError or ValueError (not one
    that recovers)."""
    signature = CompactSignature.from_hex(str(data["signature"]))
    signer = verify_verdict(
        signature,
        domain,
        job_id=job_id,
        accused=signed.node,
        root=signed.root,
        leaf_index=leaf_index,
        leaf=leaf,
    )
    return signature, signer


def needs_referees(answers: Sequence[VerifierAnswer]) -> bool:
    """Whether the first stage's answers escalate: anything but unanimous innocent verdicts."""
    return not answers or any(a.guilty is not False for a in answers)


def tally(
    answers: Sequence[VerifierAnswer], drawn_stake: int | None = None
) -> tuple[int | None, list[VerifierAnswer]]:
    """The leaf whose guilty verdicts carry more than half of the drawn stake (`drawn_stake`, by default the
    answers' stake), and those verdicts; (None, []) when no leaf has such a majority."""
    total = sum(a.stake for a in answers) if drawn_stake is None else drawn_stake
    by_leaf: dict[int, list[VerifierAnswer]] = {}
    for a in answers:
        if a.guilty and a.leaf_index is not None and a.signature is not None:
            by_leaf.setdefault(a.leaf_index, []).append(a)
    if not by_leaf:
        return None, []
    index, group = max(by_leaf.items(), key=lambda kv: sum(a.stake for a in kv[1]))
    return (index, group) if 2 * sum(a.stake for a in group) > total else (None, [])


def first_stage(
    drawn: Sequence[tuple[str, int]], excluded: Callable[[str], bool]
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """The first MIN_VERIFIERS of the draw that `excluded` does not name (a framer with MAX_FAULTS made every
    referee recompute each hop it was drawn first for), and the rest of the draw: the referees."""
    eligible = [d for d in drawn if not excluded(d[0])]
    first = (eligible if len(eligible) >= MIN_VERIFIERS else list(drawn))[:MIN_VERIFIERS]
    return first, [d for d in drawn if d not in first]
