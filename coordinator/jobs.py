"""Running one paid job end to end (protocol v2): route off chain, generate through the workers, settle on chain.

    prompt held -> Router.route (saved, nothing on chain) -> Pipeline (prefill, decode, failover, verification)
      -> close sessions (each worker answers with its EIP-712 signed commitment for the job)
      -> commitments checked off chain, saved with the output hash (settling)
      -> settleJobs([keccak(output), exactly the commitments held]), with the other jobs settling within
         `settle_batch_s` (coordinator.batching)

Each step moves the job through `coordinator.lifecycle` first, so a restart can finish what was started (the
settling part: `coordinator.settling`).
A generation that loses a routed worker to a proven cheat is run again from the start, on a route
without it (the seeded sampler makes the re-run produce what an honest run produces); tokens already
streamed to an API client are not sent twice. Anything that stops a job for good fails it on chain
(`failJob`), which refunds the client in full.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial

import torch

from coordinator.catalog import ServedModel
from coordinator.commitments import CommitmentBoard
from coordinator.corrections import Correction, rerun_tokens
from coordinator.hop_sessions import PipelineContext
from coordinator.hops import JobHops
from coordinator.job_checks import JobChecks
from coordinator.lifecycle import TERMINAL, JobLifecycle, JobState, mirrored_state
from coordinator.push_path import make_pipeline
from coordinator.router import RouteHop
from coordinator.sampling import Sampler, SamplingParams
from coordinator.settling import JobSettler
from coordinator.verification_runs import CheatDetected
from shardnet.chain.registry import JobInfo, JobStatus
from shardnet.errors import ShardnetError
from shardnet.verify.sampler import sampling_seed

log = logging.getLogger(__name__)

MAX_RERUNS = 3

OnToken = Callable[[int], Awaitable[None]]
#: Called once a job's output is saved for its settlement (a restart finishes it): the answer can go out.
OnGenerated = Callable[["GenerationResult"], None]


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
        self.settler = JobSettler(ctx, lifecycle, commitments, settle_batch_s=settle_batch_s)
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
            await self.settler.enter(job, job_hops, result.tokens, result.finish_reason, text)
            if on_generated is not None:
                try:
                    on_generated(result)
                except Exception:  # the listener's fault (a client gone); the job settles regardless
                    log.exception("job %d: the listener of its output failed", job_id)
            tx = await self.settler.settle(job_id)
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
