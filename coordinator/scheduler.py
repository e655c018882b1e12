"""Which jobs run when: prompts in, jobs scheduled (once each, a bounded number at a time), restarts and stops.

A job enters through `accept_prompt` (a client's prompt for an on-chain job, signed by that client) or `submit_own_job` (an OpenAI
request the coordinator pays itself); both move it to `prompt` in `coordinator.lifecycle`, where the chain's
`JobSubmitted` event meets it. `recover` replays, at start, what a previous run left unfinished, by
`lifecycle.recovery_action`: notably a job killed while settling is finalized (its workers are paid), not refunded.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from coordinator.catalog import ModelCatalog
from coordinator.jobs import JobRunner, OnGenerated, OnToken
from coordinator.lifecycle import (
    IllegalTransition,
    JobLifecycle,
    JobState,
    Recovery,
    mirrored_state,
    recovery_action,
)
from coordinator.sampling import SamplingParams
from coordinator.state import JobRow
from shardnet.chain.errors import ChainUnavailable
from shardnet.chain.registry import JobInfo, JobStatus, Registry
from shardnet.errors import ShardnetError
from shardnet.job_auth import AUTH_HEADER, MAX_HANDOVER_VALID_S

log = logging.getLogger(__name__)

#: Jobs paid through the API whose receipt is kept until they run (normally one each, for a moment).
MAX_SUBMITTED_KEPT = 1024


class PromptRejected(ShardnetError):
    """A prompt handed over for a job does not match it (unknown job, wrong hash, already handled)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _not_the_client(job_id: int, client: str, signer: str | None) -> str:
    why = (
        f"{AUTH_HEADER} is missing, malformed or expired (or valid for more than {MAX_HANDOVER_VALID_S} s)"
        if signer is None
        else f"{AUTH_HEADER} was signed by another key, or for another prompt or other sampling parameters"
    )
    return (
        f"only the client of job {job_id} ({client}) may hand over its prompt, and {why}: send {AUTH_HEADER}: "
        "'<expires_at>:<0x signature>', its EIP-191 signature of exactly this job id, prompt and these sampling "
        "parameters (shardnet.job_auth.sign_prompt_handover; `shardnet submit` signs it), before expires_at"
    )


def _consume(task: asyncio.Task[Any]) -> None:
    """Retrieve a job task's exception (it was logged and the job failed on chain already)."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("job task ended with %r", task.exception())


class JobScheduler:
    def __init__(
        self,
        registry: Registry,
        account: LocalAccount,
        lifecycle: JobLifecycle,
        runner: JobRunner,
        catalog: ModelCatalog,
        *,
        max_concurrent_jobs: int,
    ) -> None:
        self.registry = registry
        self.account = account
        self.lifecycle = lifecycle
        self.runner = runner
        self.catalog = catalog
        self._slots = asyncio.Semaphore(max_concurrent_jobs)
        # jobs this coordinator just paid, as their receipt showed them (taken by `_run`)
        self._submitted: dict[int, JobInfo] = {}
        self.tasks: dict[int, asyncio.Task[Any]] = {}

    # -- entering
    async def accept_prompt(
        self, job_id: int, prompt: str, params: SamplingParams, *, signer: str | None
    ) -> JobRow:
        """Take a client's prompt for an on-chain job and schedule the job. `signer` is the address whose
        X-Shardnet-Auth signed exactly this prompt and `params` for this job (None: no valid signature); it must be
        the job's client on chain, and the prompt must hash to the job's inputHash."""
        try:
            job = await asyncio.to_thread(self.registry.get_job, job_id)
        except ChainUnavailable:
            raise  # the node is down: the caller answers 503, not "no such job"
        except ShardnetError as exc:
            raise PromptRejected(
                f"job {job_id} does not exist on chain ({exc}); submit it first", 404
            ) from exc
        if signer is None or signer.lower() != job.client.lower():
            raise PromptRejected(_not_the_client(job_id, job.client, signer), 401)
        if job.status != JobStatus.Open:
            raise PromptRejected(
                f"job {job_id} is {job.status.name} on chain; only an Open job takes a prompt", 409
            )
        if job.coordinator.lower() != self.account.address.lower():
            raise PromptRejected(
                f"job {job_id} names the coordinator {job.coordinator}, not this one ({self.account.address}): hand "
                "its prompt to that coordinator",
                409,
            )
        if keccak(prompt.encode("utf-8")) != job.input_hash:
            raise PromptRejected(
                f"keccak256 of this prompt is not the inputHash of job {job_id} on chain; hand over exactly the "
                "prompt (UTF-8) whose hash was submitted",
                400,
            )
        try:
            row = self.lifecycle.take_prompt(job, prompt, params.__dict__)
        except IllegalTransition as exc:
            raise PromptRejected(f"job {job_id} already has its prompt ({exc})", 409) from exc
        self.schedule(job_id)
        return row

    async def submit_own_job(
        self, model_id: int, prompt: str, max_tokens: int, params: SamplingParams
    ) -> int:
        """For the OpenAI API: pay a job into escrow from the coordinator's own account; returns its id."""
        quote = await asyncio.to_thread(self.registry.quote, model_id, max_tokens)
        result = await asyncio.to_thread(
            self.registry.submit_job,
            model_id,
            keccak(prompt.encode()),
            max_tokens,
            self.account.address,
            quote,
        )  # the job names this coordinator
        # the receipt's JobSubmitted is the job as the chain holds it (Open, nothing posted): no read-back, and
        # `_run` takes it from here instead of reading it again (two chain reads less before the prefill)
        job = JobInfo.just_submitted(result.event("JobSubmitted"))
        self.lifecycle.take_prompt(job, prompt, params.__dict__, source="api")
        while len(self._submitted) >= MAX_SUBMITTED_KEPT:  # only jobs never scheduled stay: drop the oldest
            del self._submitted[next(iter(self._submitted))]
        self._submitted[job.job_id] = job
        return job.job_id

    # -- running
    def schedule(
        self, job_id: int, on_token: OnToken | None = None, on_generated: OnGenerated | None = None
    ) -> asyncio.Task[Any]:
        """Run the job (once: a job already running returns its task, and the callbacks given now are not used;
        see `JobRunner.run` for them)."""
        for done in [j for j, t in self.tasks.items() if t.done()]:
            del self.tasks[done]
        task = self.tasks.get(job_id)
        if task is None:
            task = asyncio.ensure_future(self._run(job_id, on_token, on_generated))
            task.add_done_callback(_consume)
            self.tasks[job_id] = task
        return task

    async def _run(self, job_id: int, on_token: OnToken | None, on_generated: OnGenerated | None) -> Any:
        # the slot is the job's generation: it is free once the output is saved for settlement, which then waits
        # up to settle_batch_s for other jobs without holding a slot
        await self._slots.acquire()
        held = True

        def free_slot() -> None:
            nonlocal held
            if held:
                held = False
                self._slots.release()

        def generated(result: Any) -> None:
            free_slot()
            if on_generated is not None:
                on_generated(result)

        try:
            return await self._run_in_slot(job_id, on_token, generated)
        finally:
            free_slot()

    async def _run_in_slot(self, job_id: int, on_token: OnToken | None, on_generated: OnGenerated) -> Any:
        row = self.lifecycle.state.get_job(job_id)
        if row is None or row.status != JobState.PROMPT or row.prompt is None:
            return None
        params = SamplingParams(**json.loads(row.sampling or "{}"))
        try:
            model = await asyncio.to_thread(self.catalog.get, int(row.model_id or 0))
        except ShardnetError as exc:
            await self.runner.fail(job_id, str(exc))
            raise
        job = self._submitted.pop(job_id, None)
        return await self.runner.run(
            job_id, model, row.prompt, params, on_token, job=job, on_generated=on_generated
        )

    async def _settle(self, job_ids: list[int]) -> None:
        """Settle the jobs a previous run left settling, all in one settleJobs (each alone if the batch fails)."""
        async with self._slots:
            try:
                txs = await self.runner.settler.finish_settlements(job_ids)
                log.info("jobs %s: settlement finished after the restart, tx %s", job_ids, set(txs.values()))
                # what the hops sent died with the old process: nothing to check, the share goes back now
                for job_id, tx in txs.items():
                    self.runner.checks.unchecked(
                        job_id, tx, "settled after a restart: its hops' steps were lost"
                    )
                return
            except ShardnetError as exc:
                if len(job_ids) == 1:
                    log.error("job %d: could not finish its settlement: %s", job_ids[0], exc)
                    await self.runner.fail(job_ids[0], f"settlement failed after a restart: {exc}")
                    return
                log.warning("jobs %s: the batch settlement failed (%s); settling each alone", job_ids, exc)
        for job_id in job_ids:
            if (row := self.lifecycle.state.get_job(job_id)) is not None and row.status == JobState.SETTLING:
                await self._settle([job_id])

    # -- restarts and stops
    async def recover(self) -> None:
        """Replay what a previous run left unfinished (see `coordinator.lifecycle.recovery_action`); the jobs left
        settling are settled together in one settleJobs."""
        to_settle: list[int] = []
        for row in self.lifecycle.needing_recovery():
            try:
                job = await asyncio.to_thread(self.registry.get_job, row.job_id)
                action = recovery_action(JobState(row.status), job.status, row.chain_pending)
                log.info(
                    "job %d: %s here, %s on chain: %s", row.job_id, row.status, job.status.name, action.value
                )
                if action == Recovery.RUN:
                    self.schedule(row.job_id)
                elif action == Recovery.REROUTE:
                    self.lifecycle.advance(row.job_id, JobState.PROMPT)
                    self.schedule(row.job_id)
                elif action == Recovery.SETTLE:
                    to_settle.append(row.job_id)
                elif action in (Recovery.FAIL, Recovery.RESEND_FAIL):
                    await self.runner.fail(
                        row.job_id, "coordinator restarted mid-job; its worker sessions are gone"
                    )
                elif action == Recovery.MIRROR:
                    self.lifecycle.advance(row.job_id, mirrored_state(job.status))
                    self.lifecycle.confirmed(row.job_id)
            except ShardnetError as exc:
                log.error("job %d: recovery failed: %s", row.job_id, exc)
        if to_settle:
            task = asyncio.ensure_future(self._settle(to_settle))
            task.add_done_callback(_consume)
            for job_id in to_settle:
                self.tasks[job_id] = task

    async def stop(self) -> None:
        """Cancel the running jobs and fail on chain (full refund now, not at the next start) the ones stopped
        mid-generation. A job whose prompt is held stays for the next start to run; a job settling stays for the
        next start to finalize (its workers did the work)."""
        jobs = dict(self.tasks)
        for task in jobs.values():
            task.cancel()
        await asyncio.gather(*jobs.values(), return_exceptions=True)
        for job_id in jobs:
            row = self.lifecycle.state.get_job(job_id)
            if row is None or row.status not in (JobState.ROUTED, JobState.GENERATING):
                continue
            log.warning("job %d was %s when the coordinator stopped: failing it on chain", job_id, row.status)
            await self.runner.fail(job_id, "coordinator stopped mid-job; its worker sessions are gone")
