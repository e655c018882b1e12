"""Running one paid job end to end: route on chain, generate through the workers, settle on chain.

    prompt held -> choose_route -> assignRoute -> Pipeline (prefill, decode, failover, verification)
      -> close sessions (workers commit) -> wait for commitments -> finalizeJob(keccak(output), layer-tokens)

A generation that loses a routed worker to a proven cheat is run again from the start, on a route
without it (the seeded sampler makes the re-run produce what an honest run produces); tokens already
streamed to an API client are not sent twice. Anything that stops a job for good fails it on chain
(`failJob`), which refunds the client in full.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import torch
from eth_utils import keccak

from coordinator.models import ServedModel
from coordinator.pipeline import CheatDetected, HopBook, Pipeline, PipelineContext
from coordinator.router import choose_route
from coordinator.sampling import Sampler, SamplingParams
from coordinator.settlement import HopWork, layer_tokens
from coordinator.state import FAILED, FINALIZED, FINALIZING, RUNNING
from shardnet.chain.registry import JobInfo, JobStatus, Registry
from shardnet.errors import ShardnetError
from shardnet.span import LayerSpan

log = logging.getLogger(__name__)

MAX_RERUNS = 3
COMMIT_POLL_S = 0.2

OnToken = Callable[[int], Awaitable[None]]


class JobError(ShardnetError):
    """A job cannot be run (prompt too long, no route, …); it is failed on chain with this message."""


@dataclass
class GenerationResult:
    tokens: list[int]
    finish_reason: str  # "stop" (EOS) or "length" (max tokens)
    failovers: list[dict[str, object]] = field(default_factory=list)
    reruns: int = 0


def output_hash(text: str) -> bytes:
    """keccak256 of the output text's UTF-8 bytes: what goes on chain."""
    return keccak(text.encode("utf-8"))


class JobRunner:
    """Runs jobs for one coordinator account; chain calls run in threads, everything else on the loop."""

    def __init__(self, registry: Registry, ctx: PipelineContext, *, commit_wait_s: float,
                 load_penalty_s: float = 0.0) -> None:
        self.registry = registry
        self.ctx = ctx
        self.commit_wait_s = commit_wait_s
        self.load_penalty_s = load_penalty_s

    # -- chain helpers (blocking calls in threads)
    async def _chain(self, fn: Callable[..., object], *args: object) -> object:
        return await asyncio.to_thread(fn, *args)

    async def _add_hop(self, job_id: int, node: str, span: LayerSpan) -> int:
        result = await asyncio.to_thread(self.registry.add_hop, job_id, node, span)
        return int(result.event("HopAdded").args["hopIndex"])

    # -- the parts of a job
    async def generate(
        self,
        job_id: int,
        model: ServedModel,
        book: HopBook,
        prompt_ids: list[int],
        max_tokens: int,
        params: SamplingParams,
        on_token: OnToken | None = None,
        first_route: list | None = None,
    ) -> GenerationResult:
        """Generate up to `max_tokens` tokens after `prompt_ids` through the job's route."""
        emitted: list[int] = []
        failovers: list[dict[str, object]] = []
        route = first_route
        for rerun in range(MAX_RERUNS + 1):
            if route is None:
                route = choose_route(self.ctx.directory.snapshot(model.info.model_id), model.num_layers,
                                     load_penalty_s=self.load_penalty_s)
            sampler = Sampler(params)
            pipe = Pipeline(self.ctx, book, model_id=model.info.model_id, num_layers=model.num_layers,
                            reason="rerun" if rerun else "route")
            tokens: list[int] = []
            try:
                await pipe.open(route)
                x = torch.tensor([prompt_ids], dtype=torch.int64)
                pos = 0
                finish = "length"
                while len(tokens) < max_tokens:
                    logits = await pipe.forward(x, pos)
                    pos += int(x.shape[1])
                    token = sampler(logits)
                    if token in model.eos_ids and not params.ignore_eos:
                        finish = "stop"
                        break
                    tokens.append(token)
                    if len(tokens) > len(emitted):
                        emitted.append(token)
                        if on_token is not None:
                            await on_token(token)
                    elif emitted[len(tokens) - 1] != token:
                        log.warning("job %d: the re-run differs from tokens already streamed at %d", job_id,
                                    len(tokens) - 1)
                    x = torch.tensor([[token]], dtype=torch.int64)
                return GenerationResult(tokens, finish, failovers + pipe.failovers, rerun)
            except CheatDetected as exc:
                log.warning("job %d: %s", job_id, exc)
                route = None
            finally:
                failovers.extend(pipe.failovers)
                await pipe.close()
                self.ctx.state.add_steps(job_id, pipe.records)
        raise JobError(f"job {job_id}: gave up after {MAX_RERUNS} re-runs caused by cheating workers")

    async def wait_commitments(self, job_id: int, book: HopBook) -> list[bool]:
        """Poll the hops until every hop that computed something (by a worker not down) committed, or time out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.commit_wait_s
        while True:
            hops = await asyncio.to_thread(self.registry.get_hops, job_id)
            committed = [h.committed for h in hops]
            waiting = [
                i for i, h in enumerate(hops)
                if not h.committed and book.positions[i] > 0 and not self.ctx.directory.is_down(h.node)
                and not self.ctx.directory.is_excluded(h.node)
            ]
            if not waiting or loop.time() >= deadline:
                if waiting:
                    log.warning("job %d: hops %s did not commit within %.0f s; they will not be paid", job_id,
                                waiting, self.commit_wait_s)
                return committed
            await asyncio.sleep(COMMIT_POLL_S)

    async def settle(self, job: JobInfo, model: ServedModel, book: HopBook, text: str) -> str:
        """Wait for commitments, then finalize with the output hash and each hop's layer-tokens; returns the tx."""
        committed = await self.wait_commitments(job.job_id, book)
        max_prompt = int(await asyncio.to_thread(self.registry.max_prompt_tokens))
        work = [HopWork(span, book.positions[i]) for i, (_, span) in enumerate(book.hops)]
        tokens = layer_tokens(work, max_tokens=job.max_tokens, max_prompt_tokens=max_prompt)
        # a cheat is paid nothing, even for the work it committed to
        tokens = [0 if self.ctx.directory.is_excluded(node) else t for t, (node, _) in zip(tokens, book.hops, strict=True)]
        for i, (node, span) in enumerate(book.hops):
            self.ctx.state.save_hop(job.job_id, i, node=node.lower(), endpoint=self.ctx.directory.endpoint(node) or "",
                                    span_start=span.start, span_end=span.end, positions=book.positions[i],
                                    layer_tokens=tokens[i], commitment="committed" if committed[i] else None,
                                    reason=book.reasons[i])
        result = await asyncio.to_thread(self.registry.finalize_job, job.job_id, output_hash(text), tokens)
        return result.tx_hash

    # -- the whole job
    async def run(self, job_id: int, model: ServedModel, prompt: str, params: SamplingParams,
                  on_token: OnToken | None = None) -> GenerationResult:
        """Route, generate and settle a job whose prompt matches its on-chain inputHash. Fails it on chain on error."""
        state = self.ctx.state
        job: JobInfo = await asyncio.to_thread(self.registry.get_job, job_id)
        try:
            if job.status != JobStatus.Submitted:
                raise JobError(f"job {job_id} is {job.status.name} on chain, not Submitted; nothing to run")
            text = model.chat_prompt([{"role": "user", "content": prompt}]) if params.chat else prompt
            prompt_ids = model.encode(text)
            max_prompt = int(await asyncio.to_thread(self.registry.max_prompt_tokens))
            if not prompt_ids:
                raise JobError("the prompt is empty after tokenization")
            if len(prompt_ids) > max_prompt:
                raise JobError(f"the prompt has {len(prompt_ids)} tokens, more than the registry's "
                               f"maxPromptTokens ({max_prompt}); shorten it")
            route = choose_route(self.ctx.directory.snapshot(model.info.model_id), model.num_layers,
                                 load_penalty_s=self.load_penalty_s)
            hops = [(h.address, h.span) for h in route]
            await asyncio.to_thread(self.registry.assign_route, job_id, hops)
            state.upsert_job(job_id, status=RUNNING, prompt_tokens=len(prompt_ids),
                             sampling=json.dumps(params.__dict__))
            for i, h in enumerate(route):
                state.save_hop(job_id, i, node=h.address.lower(), endpoint=h.endpoint, span_start=h.span.start,
                               span_end=h.span.end, positions=0, reason="route")
            book = HopBook(job_id, list(hops), lambda node, span: self._add_hop(job_id, node, span))
            result = await self.generate(job_id, model, book, prompt_ids, job.max_tokens, params, on_token, route)
            text = model.decode(result.tokens)
            state.upsert_job(job_id, status=FINALIZING, output=text, output_tokens=json.dumps(result.tokens),
                             output_hash="0x" + output_hash(text).hex(), finish_reason=result.finish_reason)
            tx = await self.settle(job, model, book, text)
            state.upsert_job(job_id, status=FINALIZED, tx_finalize=tx)
            log.info("job %d finalized: %d tokens (%s), %d failovers, %d re-runs, tx %s", job_id,
                     len(result.tokens), result.finish_reason, len(result.failovers), result.reruns, tx)
            return result
        except Exception as exc:
            reason = str(exc) or type(exc).__name__
            log.error("job %d failed: %s", job_id, reason)
            state.upsert_job(job_id, status=FAILED, error=reason)
            await self.fail_on_chain(job_id, reason)
            raise

    async def fail_on_chain(self, job_id: int, reason: str) -> None:
        """failJob (full refund) if the job is still open on chain; errors are logged, not raised."""
        try:
            job = await asyncio.to_thread(self.registry.get_job, job_id)
            if job.status in (JobStatus.Submitted, JobStatus.Routed):
                await asyncio.to_thread(self.registry.fail_job, job_id, reason[:200])
                log.info("job %d failed on chain (client refunded): %s", job_id, reason)
        except ShardnetError as exc:
            log.error("job %d: could not fail it on chain: %s", job_id, exc)
