"""Running one paid job end to end (protocol v2): route off chain, generate through the workers, settle on chain.

    prompt held -> Router.route (saved, nothing on chain) -> Pipeline (prefill, decode, failover, verification)
      -> close sessions (each worker answers with its EIP-712 signed commitment for the job)
      -> commitments checked off chain, saved with the output hash (settling)
      -> settleJobs([keccak(output), exactly the commitments held]), with the other jobs settling within
         `settle_batch_s` (coordinator.batching)

Each step moves the job through `coordinator.lifecycle` first, so a restart can finish what was started:
`finish_settlement` is the same code for a job settled now and one a killed coordinator left settling.
A generation that loses a routed worker to a proven cheat is run again from the start, on a route
without it (the seeded sampler makes the re-run produce what an honest run produces); tokens already
streamed to an API client are not sent twice. Anything that stops a job for good fails it on chain
(`failJob`), which refunds the client in full.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

import torch
from eth_utils import keccak

from coordinator.batching import SettlementBatcher
from coordinator.catalog import ServedModel
from coordinator.commitments import CommitmentBoard
from coordinator.corrections import Correction, rerun_tokens
from coordinator.hop_sessions import PipelineContext
from coordinator.hops import JobHops
from coordinator.job_checks import JobChecks, relayed_root_mismatch
from coordinator.lifecycle import TERMINAL, IllegalTransition, JobLifecycle, JobState, mirrored_state
from coordinator.push_path import make_pipeline
from coordinator.router import RouteHop
from coordinator.sampling import Sampler, SamplingParams
from coordinator.settlement import HopWork, check_commitment, layer_tokens, overlapping_hops
from coordinator.state import HopRow
from coordinator.verification_runs import CheatDetected
from shardnet.chain.commitments import SignedCommitment
from shardnet.chain.registry import JobInfo, JobStatus, Settlement, TxResult
from shardnet.errors import ShardnetError
from shardnet.verify.sampler import sampling_seed

log = logging.getLogger(__name__)

MAX_RERUNS = 3
#: Test hook (tests/coordinator): set to 1 and the coordinator SIGKILLs itself right before sending settleJobs,
#: so a test can check that a restart finishes the settlement. Never set it in production.
DIE_BEFORE_FINALIZE_ENV = "SHARDNET_TEST_DIE_BEFORE_FINALIZE"

OnToken = Callable[[int], Awaitable[None]]
#: Called once a job's output is saved for its settlement (a restart finishes it): the answer can go out.
OnGenerated = Callable[["GenerationResult"], None]
#: seconds before each new try of a failed settleJobs of a job whose answer may be out
SETTLE_RETRIES_S = (2.0, 8.0, 30.0)


class JobError(ShardnetError):
    """A job cannot be run (prompt too long, no route, …); it is failed on chain with this message."""


@dataclass
class GenerationResult:
    tokens: list[int]
    finish_reason: str  # "stop" (EOS) or "length" (max tokens)
    failovers: list[dict[str, object]] = field(default_factory=list)
    reruns: int = 0
    #: tokens already streamed that a re-run after a caught cheat replaced: (index, streamed, correct)
    replaced: list[tuple[int, int, int]] = field(default_factory=list)


def output_hash(text: str) -> bytes:
    """keccak256 of the output text's UTF-8 bytes: what goes on chain."""
    return keccak(text.encode("utf-8"))


class JobRunner:
    """Runs jobs for one coordinator account; chain calls run in threads, everything else on the loop."""

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
        # settled jobs' hops, judged by drawn verifiers; their pay batched like the settlements
        self.checks = JobChecks(ctx, share=ctx.check_share, pay_batch_s=settle_batch_s)

    # -- generating
    async def generate(
        self,
        job_id: int,
        model: ServedModel,
        job_hops: JobHops,
        prompt_ids: list[int],
        max_tokens: int,
        params: SamplingParams,
        on_token: OnToken | None,
        first_route: list[RouteHop],
    ) -> GenerationResult:
        """Generate up to `max_tokens` tokens after `prompt_ids` through the job's route."""
        emitted: list[int] = []
        replaced: dict[int, tuple[int, int, int]] = {}  # index -> (index, streamed, correct)
        failovers: list[dict[str, object]] = []
        route: list[RouteHop] | None = first_route
        for rerun in range(MAX_RERUNS + 1):
            if route is None:
                route = self.router.route(model.info.model_id, model.num_layers)
            domain = self.ctx.domain
            sampler = Sampler(
                params, seed=sampling_seed(domain.chain_id, domain.registry, job_id, params.seed)
            )
            pipe = make_pipeline(
                self.ctx,
                job_hops,
                model_id=model.info.model_id,
                num_layers=model.num_layers,
                reason="rerun" if rerun else "route",
                greedy=params.greedy,
            )
            tokens: list[int] = []
            drawn: list[int] = []  # every token drawn in this run, a final end-of-sequence included
            try:
                await pipe.open(route)
                x = torch.tensor([prompt_ids], dtype=torch.int64)
                pos = 0
                finish = "length"
                while len(tokens) < max_tokens:
                    logits = await pipe.forward(x, pos)
                    pos += int(x.shape[1])
                    token = sampler(logits)
                    drawn.append(token)
                    if token in model.eos_ids and not params.ignore_eos:
                        finish = "stop"
                        break
                    tokens.append(token)
                    if len(tokens) > len(emitted):
                        emitted.append(token)
                        if on_token is not None:
                            await on_token(token)
                    elif emitted[len(tokens) - 1] != token:
                        index = len(tokens) - 1
                        log.warning(
                            "job %d: the re-run differs from tokens already streamed at %d", job_id, index
                        )
                        replaced[index] = (index, emitted[index], token)
                    else:  # this (later) run agrees with what was streamed here
                        replaced.pop(len(tokens) - 1, None)
                    x = torch.tensor([[token]], dtype=torch.int64)
                # streamed tokens this run did not make (it stopped earlier): "correct" is -1
                gone = [(i, emitted[i], -1) for i in range(len(tokens), len(emitted))]
                fixes = sorted(replaced.values()) + gone
                await pipe.finish()
                job_hops.shown(drawn, Counter(r.hop_index for r in pipe.records), params.__dict__)
                return GenerationResult(tokens, finish, failovers + pipe.failovers, rerun, fixes)
            except CheatDetected as exc:
                log.warning("job %d: %s", job_id, exc)
                route = None
            finally:
                failovers.extend(pipe.failovers)
                await pipe.close()
                self.ctx.state.add_steps(job_id, pipe.records)
        raise JobError(f"job {job_id}: gave up after {MAX_RERUNS} re-runs caused by cheating workers")

    # -- settling
    async def _enter_settling(
        self, job: JobInfo, job_hops: JobHops, result: GenerationResult, text: str
    ) -> None:
        """Save what settleJobs will send (output hash, each hop's checked signed commitment), then move to settling."""
        max_prompt = int(await asyncio.to_thread(self.registry.max_prompt_tokens))
        domain = self.ctx.domain
        work = [HopWork(span, job_hops.positions[i]) for i, (_, span) in enumerate(job_hops.hops)]
        tokens = layer_tokens(work, max_tokens=job.max_tokens, max_prompt_tokens=max_prompt)
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
                layer_tokens=0 if note else tokens[i],
                commitment="0x" + signed.root.hex() if signed else None,
                signed_commitment=json.dumps(signed.to_json()) if signed else None,
                settle_note=note,
                reason=job_hops.reasons[i],
            )
        self.lifecycle.advance(
            job.job_id,
            JobState.SETTLING,
            output=text,
            output_tokens=json.dumps(result.tokens),
            output_hash="0x" + output_hash(text).hex(),
            finish_reason=result.finish_reason,
        )

    async def finish_settlement(self, job_id: int) -> str:
        """settleJobs with exactly the checked signed commitments `_enter_settling` saved; returns the tx hash.

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

    async def _settle(self, job_id: int) -> str:
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

    # -- the whole job
    async def run(
        self,
        job_id: int,
        model: ServedModel,
        prompt: str,
        params: SamplingParams,
        on_token: OnToken | None = None,
        *,
        job: JobInfo | None = None,
        on_generated: OnGenerated | None = None,
    ) -> GenerationResult:
        """Route, generate and settle a job whose prompt matches its on-chain inputHash. Fails it on chain on error.
        `job`: the job as its own submission's receipt showed it (else it is read from the chain).
        `on_generated`: told the result as soon as it is saved for settlement, before settleJobs (which waits up
        to `settle_batch_s` for other jobs to share its transaction): a client need not wait for it."""
        if job is None or job.job_id != job_id:
            job = await asyncio.to_thread(self.registry.get_job, job_id)
        try:
            if job.status != JobStatus.Open:
                raise JobError(f"job {job_id} is {job.status.name} on chain, not Open; nothing to run")
            if job.coordinator.lower() != self.ctx.account.address.lower():
                raise JobError(f"job {job_id} names the coordinator {job.coordinator}, not this one")
            text = model.chat_prompt([{"role": "user", "content": prompt}]) if params.chat else prompt
            prompt_ids = model.encode(text)
            max_prompt = int(await asyncio.to_thread(self.registry.max_prompt_tokens))
            if not prompt_ids:
                raise JobError("the prompt is empty after tokenization")
            if len(prompt_ids) > max_prompt:
                raise JobError(
                    f"the prompt has {len(prompt_ids)} tokens, more than the registry's "
                    f"maxPromptTokens ({max_prompt}); shorten it"
                )
            route = self.router.route(model.info.model_id, model.num_layers)
            hops = [(h.address, h.span) for h in route]
            self.lifecycle.routed(
                job_id, len(prompt_ids), [(h.address, h.endpoint, h.span.start, h.span.end) for h in route]
            )
            self.lifecycle.advance(job_id, JobState.GENERATING)  # no route goes on chain (protocol v2)
            self.commitments.track(job_id)
            job_hops = JobHops(job_id, list(hops), max_positions=len(prompt_ids) + job.max_tokens)
            result = await self.generate(
                job_id, model, job_hops, prompt_ids, job.max_tokens, params, on_token, route
            )
            text = model.decode(result.tokens)
            await self._enter_settling(job, job_hops, result, text)
            if on_generated is not None:
                try:
                    on_generated(result)
                except Exception:  # the listener's fault (a client gone); the job settles regardless
                    log.exception("job %d: the listener of its output failed", job_id)
            tx = await self._settle(job_id)
            rerun = partial(rerun_tokens, self, job_id, model, prompt_ids, job.max_tokens, params)
            fix = Correction(
                result.tokens, rerun, model.decode
            )  # if a hop is slashed: what the client is told
            self.checks.start(job_id, model.info.model_id, job_hops, tx, fix)
            log.info(
                "job %d settled: %d tokens (%s), %d failovers, %d re-runs, tx %s",
                job_id,
                len(result.tokens),
                result.finish_reason,
                len(result.failovers),
                result.reruns,
                tx,
            )
            return result
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
            log.error("job %d failed: %s", job_id, reason)
            await self.fail(job_id, reason)
            raise
        finally:
            self.commitments.forget(job_id)

    async def fail(self, job_id: int, reason: str) -> None:
        """Fail the job here (saved first) and on chain with failJob (full refund); errors are logged, not raised.

        A job the chain has already closed (finalized, cancelled, failed) takes the chain's verdict instead.
        """
        try:
            job = await asyncio.to_thread(self.registry.get_job, job_id)
            row = self.lifecycle.state.get_job(job_id)
            if row is not None and JobState(row.status) in TERMINAL:
                if not row.chain_pending:
                    return
            elif job.status != JobStatus.Open:
                self.lifecycle.advance(job_id, mirrored_state(job.status))
                return
            else:
                self.lifecycle.advance(job_id, JobState.FAILED, error=reason)
            if job.status == JobStatus.Open:
                await asyncio.to_thread(self.registry.fail_job, job_id, job.record, reason[:200])
                log.info(
                    "job %d failed on chain (client refunded what posted commitments left): %s",
                    job_id,
                    reason,
                )
            self.lifecycle.confirmed(job_id)
        except ShardnetError as exc:
            log.error("job %d: could not fail it on chain: %s", job_id, exc)
