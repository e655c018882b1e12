"""Paying the drawn verifiers of a checked job from the verification share its settlement held (issue 10 item 5).

Every drawn verifier answers with an EIP-712 signed Verdict: on the wrong leaf when guilty, on
`INNOCENT_LEAF_INDEX` (leaf 0) when innocent. After a job's hops are checked, the coordinator sends the registry
those verdicts, hop by hop, with the size of the draw they came from (`payVerifiers`): the registry redraws, pays
`verifyBps` of the hop's pay to each drawn signer once, and returns the rest of the share to the client. A drawn
verifier that refused, timed out or did not sign is not paid (and is marked down off chain, as before).

Payments ready within `--settle-batch-s` of each other go in one `payVerifiers` (at most MAX_PAY_BATCH jobs; a
batch that reverts is sent again job by job): a payment with no hop (an unchecked job's share returned) costs
43,823 gas alone and 14,634 a job in a batch of 16 (measured on anvil), before any hops and verdicts (their
gas: docs/gas.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from coordinator.batching import SettlementBatcher
from coordinator.dispute_answers import answer_signer
from shardnet.chain.commitments import INNOCENT_LEAF, INNOCENT_LEAF_INDEX, SignedCommitment, verify_verdict
from shardnet.chain.errors import ChainError
from shardnet.chain.registry import HopVerdicts, JobRecord, PaidVerdict, Registry, VerificationPayment
from shardnet.chain.tx import wait_for_receipt
from shardnet.wire.eip712 import CompactSignature, Domain

log = logging.getLogger(__name__)

MIN_VERIFIERS = 2  # ShardRegistry.MIN_VERIFIERS: the smallest draw a hop's verdicts may come from
MAX_PAY_BATCH = 16  # the most jobs this coordinator pays in one payVerifiers (the registry takes up to 64)


class PayableAnswer(Protocol):
    """What a verifier's answer needs to be paid for (coordinator.disputes.VerifierAnswer has it)."""

    @property
    def guilty(self) -> bool | None: ...
    @property
    def leaf_index(self) -> int | None: ...
    @property
    def signature(self) -> CompactSignature | None: ...


def innocent_signature(
    data: Mapping[str, Any], domain: Domain, job_id: int, signed: SignedCommitment, verifier: str
) -> CompactSignature | None:
    """The verifier's signed innocent verdict from its /v1/verify answer, or None when it sent none (or one that
    another key signed): such an answer still counts as innocent, but it cannot be paid."""
    if data.get("leaf_index") != INNOCENT_LEAF_INDEX or not isinstance(data.get("signature"), str):
        return None
    try:
        signature, signer = answer_signer(data, domain, job_id, signed, INNOCENT_LEAF_INDEX, INNOCENT_LEAF)
    except ValueError:
        return None
    return signature if signer.lower() == verifier.lower() else None


def hop_verdicts(
    signed: SignedCommitment, answers: Sequence[PayableAnswer], picks: int, leaves: Sequence[bytes]
) -> HopVerdicts:
    """The payable verdicts of one hop's drawn verifiers (`picks`: the size of the draw they came from; `leaves`:
    the hop's Merkle leaves, where a guilty verdict's leaf is read). Answers without a signature are left out."""
    verdicts = []
    for a in answers:
        if a.signature is None or a.guilty is None:
            continue
        if not a.guilty:
            verdicts.append(PaidVerdict(INNOCENT_LEAF_INDEX, INNOCENT_LEAF, a.signature))
        elif a.leaf_index is not None and 0 <= a.leaf_index < len(leaves):
            verdicts.append(PaidVerdict(a.leaf_index, leaves[a.leaf_index], a.signature))
    return HopVerdicts(signed, picks, verdicts)


def drawn_only(
    registry: Registry, domain: Domain, job_id: int, record: JobRecord, close_block: int, hop: HopVerdicts
) -> HopVerdicts:
    """`hop` with only the verdicts the registry pays: each signed by a distinct one of the first `picks` verifiers
    it draws for the hop (one more would revert the whole payment, and every honest verifier's pay with it)."""
    c = hop.commitment
    drawn = [
        a.lower() for a, _ in registry.draw_verifiers(job_id, record, close_block, c.node, c.span, c.root)
    ]
    allowed = set(drawn[: hop.picks])
    kept = []
    for v in hop.verdicts:
        try:
            signer = verify_verdict(
                v.signature,
                domain,
                job_id=job_id,
                accused=c.node,
                root=c.root,
                leaf_index=v.leaf_index,
                leaf=v.leaf,
            ).lower()
        except ValueError:
            signer = ""
        if signer in allowed:
            allowed.discard(signer)
            kept.append(v)
        else:
            log.warning(
                "job %d: a verdict on %s's hop by %s is not payable (not drawn there)", job_id, c.node, signer
            )
    return HopVerdicts(c, hop.picks, kept)


class VerifierPayer:
    """Pays checked jobs' verifiers, the payments ready within `window_s` of each other in one transaction."""

    def __init__(self, registry: Registry, window_s: float = 0.0) -> None:
        self.registry = registry
        self._batcher = SettlementBatcher(
            self._send, window_s=window_s, max_jobs=MAX_PAY_BATCH, what="payVerifiers"
        )
        # job id -> its payment, while it waits for its batch
        self._ready: dict[int, VerificationPayment] = {}
        # job id -> its VerificationPaid event, until its caller reads it
        self._paid: dict[int, Mapping[str, Any]] = {}

    async def _send(self, job_ids: list[int]) -> dict[int, str]:
        # not those whose caller was cancelled
        payments = [self._ready[j] for j in job_ids if j in self._ready]
        if not payments:
            return dict.fromkeys(job_ids, "")
        result = await asyncio.to_thread(self.registry.pay_verifiers, payments)
        for event in result.events:
            job_id = int(event.args.get("jobId", -1)) if event.name == "VerificationPaid" else -1
            if job_id in job_ids and job_id in self._ready:
                self._paid[job_id] = event.args
        return dict.fromkeys(job_ids, result.tx_hash)

    async def pay(
        self, job_id: int, record: JobRecord, close_block: int, hops: Sequence[HopVerdicts]
    ) -> str | None:
        """Send the job's verdicts to the registry to be paid (`hops` may be empty: the client then gets the whole
        share back); returns the transaction hash, or None when the job holds no share or the call failed
        (logged: the client can still take the share back after the draw's reach with refundVerification)."""
        registry = self.registry
        if job_id in self._ready:  # no caller does: one payment a job (the registry would refuse the second)
            log.warning("job %d: its verifiers' payment is on its way already; not sent twice", job_id)
            return None
        try:
            _held, unspent = await asyncio.to_thread(registry.verification_state, job_id)
            if not unspent:
                return None
            domain = await asyncio.to_thread(registry.domain)
            payable = [
                await asyncio.to_thread(drawn_only, registry, domain, job_id, record, close_block, h)
                for h in hops
                if h.picks >= MIN_VERIFIERS
            ]
            self._ready[job_id] = VerificationPayment(job_id, record, close_block, payable)
            try:
                tx = await self._batcher.settle(job_id)
            finally:
                self._ready.pop(job_id, None)
        except ChainError as exc:
            log.warning("job %d: paying its verifiers failed: %s", job_id, exc)
            return None
        except Exception:  # noqa: BLE001 - a check's outcome must not be lost to its payment
            log.exception("job %d: paying its verifiers failed", job_id)
            return None
        finally:
            paid = self._paid.pop(job_id, None)
        if paid is None:
            log.warning("job %d: payVerifiers (tx %s) paid nothing for it", job_id, tx)
            return tx
        log.info(
            "job %d: %d verdicts paid %d wei, %d wei back to the client (tx %s)",
            job_id,
            int(paid["verdicts"]),
            int(paid["paid"]),
            int(paid["refund"]),
            tx,
        )
        return tx

    async def return_share(self, job_id: int, settle_tx: str) -> list[Any]:
        """A job nobody checks (checks off, a LoRA job, no hop checkable): its whole verification share goes back to
        the client at once (`payVerifiers` with no hop needs no draw). Returns [] (no dispute outcome)."""
        try:
            receipt = await asyncio.to_thread(wait_for_receipt, self.registry.w3, settle_tx)
            raw = receipt["blockNumber"]  # a raw JSON-RPC receipt: hex
            close_block = int(raw, 16) if isinstance(raw, str) else int(raw)
            record = await asyncio.to_thread(self.registry.job_record, job_id)
        except ChainError as exc:
            log.warning(
                "job %d: its verification share stays held (anyone refunds it later): %s", job_id, exc
            )
            return []
        await self.pay(job_id, record, close_block, [])
        return []
