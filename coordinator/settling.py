"""From a job's output to its settlement on chain: the output and each hop's checked signed commitment are saved
(the job is `settling`: its answer may go out), then settleJobs pays the hops the registry accepts, with the other
jobs settling within `settle_batch_s` (coordinator.batching), and the job is finalized.

`finish_settlement` is the same code for a job settled now and one a killed coordinator left settling (it reads
only the database and the chain), so a coordinator killed here pays the workers at its next start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal

from eth_utils import keccak

from coordinator.batching import SettlementBatcher
from coordinator.commitments import CommitmentBoard
from coordinator.hop_facts import relayed_root_mismatch
from coordinator.hop_sessions import PipelineContext
from coordinator.hops import JobHops
from coordinator.lifecycle import IllegalTransition, JobLifecycle, JobState, mirrored_state
from coordinator.settlement import HopWork, check_commitment, layer_tokens, overlapping_hops
from coordinator.state import HopRow
from shardnet.chain.commitments import SignedCommitment
from shardnet.chain.registry import JobInfo, Settlement, TxResult

log = logging.getLogger(__name__)

#: Test hook (tests/coordinator): set to 1 and the coordinator SIGKILLs itself right before sending settleJobs,
#: so a test can check that a restart finishes the settlement. Never set it in production.
DIE_BEFORE_FINALIZE_ENV = "SHARDNET_TEST_DIE_BEFORE_FINALIZE"
#: seconds before each new try of a failed settleJobs of a job whose answer may be out
SETTLE_RETRIES_S = (2.0, 8.0, 30.0)


def output_hash(text: str) -> bytes:
    """keccak256 of the output text's UTF-8 bytes: what goes on chain."""
    return keccak(text.encode("utf-8"))


class JobSettler:
    """Saves what a job's settlement sends, sends it (batched) and records what the registry did."""

    def __init__(
        self,
        ctx: PipelineContext,
        lifecycle: JobLifecycle,
        commitments: CommitmentBoard,
        *,
        settle_batch_s: float = 0.0,
    ) -> None:
        self.ctx = ctx
        self.registry = ctx.registry
        self.router = ctx.router
        self.lifecycle = lifecycle
        self.commitments = commitments
        self.batcher = SettlementBatcher(self.finish_settlements, window_s=settle_batch_s)

    async def enter(
        self, job: JobInfo, job_hops: JobHops, tokens: list[int], finish_reason: str, text: str
    ) -> None:
        """Save what settleJobs will send (output hash, each hop's checked signed commitment), then move to settling."""
        max_prompt = int(await asyncio.to_thread(self.registry.max_prompt_tokens))
        domain = self.ctx.domain
        work = [HopWork(span, job_hops.positions[i]) for i, (_, span) in enumerate(job_hops.hops)]
        paid_tokens = layer_tokens(work, max_tokens=job.max_tokens, max_prompt_tokens=max_prompt)
        directory = self.router.directory
        overlapping = overlapping_hops(
            work,
            [
                i
                for i, (n, _) in enumerate(job_hops.hops)
                if i in job_hops.commitments and not directory.is_excluded(n)
            ],
        )
        for i, (node, span) in enumerate(job_hops.hops):
            signed = job_hops.commitments.get(i)
            if directory.is_excluded(node):  # a cheat is paid nothing, even for the work it committed to
                note: str | None = "caught sending wrong outputs: left out of the settlement"
            elif (
                i in overlapping
            ):  # the registry pays no layer twice: a failover's overlapping hop posts its own
                note = "its layers overlap a settled hop's: left out of the settlement (it may post its own)"
            elif signed is None:
                note = "no signed commitment in its close answer (it may post its own)"
            elif await relayed_root_mismatch(job_hops, i):
                note = "its signed root is not that of the steps it received and sent: not paid"
            else:
                note = check_commitment(
                    signed,
                    job_id=job.job_id,
                    node=node,
                    span=span,
                    domain=domain,
                    max_positions=job.max_tokens + max_prompt,
                    seen_positions=job_hops.positions[i],
                )
            if note is not None and job_hops.positions[i] > 0:
                log.warning(
                    "job %d: hop %d (%s, layers %s) is not settled: %s", job.job_id, i, node, span, note
                )
            self.ctx.state.save_hop(
                job.job_id,
                i,
                node=node.lower(),
                endpoint=directory.endpoint(node) or "",
                span_start=span.start,
                span_end=span.end,
                positions=job_hops.positions[i],
                layer_tokens=0 if note else paid_tokens[i],
                commitment="0x" + signed.root.hex() if signed else None,
                signed_commitment=json.dumps(signed.to_json()) if signed else None,
                settle_note=note,
                reason=job_hops.reasons[i],
            )
        self.lifecycle.advance(
            job.job_id,
            JobState.SETTLING,
            output=text,
            output_tokens=json.dumps(tokens),
            output_hash="0x" + output_hash(text).hex(),
            finish_reason=finish_reason,
        )

    async def finish_settlement(self, job_id: int) -> str:
        """settleJobs with exactly the checked signed commitments `enter` saved; returns the tx hash.

        The same for a job settled now and for one a previous run left settling (it reads only the database
        and the chain), so a coordinator killed here pays the workers at its next start.
        """
        return (await self.finish_settlements([job_id]))[job_id]

    async def finish_settlements(self, job_ids: list[int]) -> dict[int, str]:
        """Settle several settling jobs in one settleJobs transaction (a restart settles what it finds at once);
        returns the transaction hash per job."""
        batch: list[tuple[Settlement, list[tuple[HopRow, SignedCommitment]]]] = []
        for job_id in job_ids:
            row = self.lifecycle.state.get_job(job_id)
            if row is None or row.status != JobState.SETTLING or row.output_hash is None:
                raise IllegalTransition(f"job {job_id} is not settling; nothing to settle")
            held = [
                (h, SignedCommitment.from_json(json.loads(h.signed_commitment)))
                for h in self.lifecycle.state.hops(job_id)
                if h.signed_commitment and not h.settle_note
            ]
            record = await asyncio.to_thread(self.registry.job_record, job_id)
            batch.append(
                (Settlement(job_id, record, bytes.fromhex(row.output_hash[2:]), [c for _, c in held]), held)
            )
        if os.environ.get(DIE_BEFORE_FINALIZE_ENV) == "1":
            log.error(
                "test hook %s: dying before settleJobs of job %s",
                DIE_BEFORE_FINALIZE_ENV,
                ", ".join(map(str, job_ids)),
            )
            os.kill(os.getpid(), signal.SIGKILL)
        result = await asyncio.to_thread(self.registry.settle_jobs, [s for s, _ in batch])
        for settlement, held in batch:
            await self._settled(settlement, held, result)
        return {job_id: result.tx_hash for job_id in job_ids}

    async def _settled(
        self, settlement: Settlement, held: list[tuple[HopRow, SignedCommitment]], result: TxResult
    ) -> None:
        """Record what a mined settleJobs did with one job: which hops were paid, and the job finalized."""
        job_id = settlement.job_id
        settled = [e for e in result.events if e.name == "JobSettled" and int(e.args["jobId"]) == job_id]
        if not settled:  # the registry skips a job already closed: take the chain's verdict
            status, _, _ = await asyncio.to_thread(self.registry.job_state, job_id)
            self.lifecycle.advance(job_id, mirrored_state(status))
            self.lifecycle.confirmed(job_id)
            return
        paid_bits = int(settled[0].args["paidHops"])
        order = {c.node.lower(): i for i, c in enumerate(settlement.sorted_hops())}
        for h, c in held:
            paid = paid_bits >> order[c.node.lower()] & 1
            self.ctx.state.save_hop(
                job_id,
                h.hop_index,
                settle_note=None
                if paid
                else "settled but not paid by the registry (posted already, stake, jail or escrow)",
            )
        self.lifecycle.advance(job_id, JobState.FINALIZED, tx_finalize=result.tx_hash)
        self.commitments.forget(job_id)

    async def settle(self, job_id: int) -> str:
        """settleJobs of a job whose output is saved, with the jobs settling now; its client may have the answer
        already, so a failure (a chain node's hiccup) is tried again after each of SETTLE_RETRIES_S before it is
        raised (and the job failed): its workers did the work."""
        for delay in (*SETTLE_RETRIES_S, None):
            try:
                return await self.batcher.settle(job_id)
            except Exception as exc:
                if delay is None:
                    raise
                log.warning("job %d: its settlement failed (%s); trying again in %.0f s", job_id, exc, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")
