"""The coordinator service: chain watcher, worker directory and probes, job scheduling, HTTP API.

Lifecycle (`setup`, `run_forever`, `stop`): setup checks the account is an approved coordinator on chain,
opens the database, rebuilds the directory of live workers from the chain's views, and recovers jobs a
previous run left behind (a job that was generating is failed on chain, so its client is refunded; a job
whose prompt is held but not yet routed is run). Then the watcher follows events from its durable cursor.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from typing import Any

import aiohttp
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
from sqlalchemy.orm import Session

from coordinator.config import CoordinatorConfig
from coordinator.directory import WorkerDirectory, probe_forever
from coordinator.jobs import JobRunner
from coordinator.models import ModelCatalog, ServedModel
from coordinator.pipeline import PipelineContext
from coordinator.sampling import SamplingParams
from coordinator.state import (
    CANCELLED,
    DONE,
    FAILED,
    FINALIZED,
    FINALIZING,
    QUEUED,
    RUNNING,
    WAITING,
    CoordinatorState,
    JobRow,
)
from coordinator.verifier import Tolerance
from shardnet.chain.registry import JobStatus, Registry
from shardnet.chain.tx import DecodedEvent
from shardnet.chain.watcher import EventWatcher
from shardnet.db import make_engine
from shardnet.errors import ShardnetError
from shardnet.span import LayerSpan
from shardnet.wire.http_guard import DEFAULT_HEADER_TIMEOUT_S, ConnectionGuard

log = logging.getLogger(__name__)

#: API users may sit behind one proxy address and stream many answers at once: a generous cap
COORDINATOR_MAX_CONNECTIONS_PER_IP = 256

WATCHED = ("JobSubmitted", "JobCancelled", "ShardAnnounced", "ShardReleased", "NodeRegistered", "EndpointUpdated",
           "NodeSlashed")


def _consume(task: asyncio.Task[Any]) -> None:
    """Retrieve a job task's exception (it was logged and the job failed on chain already)."""
    if not task.cancelled() and task.exception() is not None:
        log.debug("job task ended with %r", task.exception())


class NotCoordinatorError(ShardnetError):
    """The coordinator's account is not approved on chain."""


class PromptRejected(ShardnetError):
    """A prompt handed over for a job does not match it (unknown job, wrong hash, already handled)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class CoordinatorService:
    def __init__(self, config: CoordinatorConfig, registry: Registry, account: LocalAccount) -> None:
        self.config = config
        self.registry = registry
        self.account = account
        self.engine = make_engine(config.database_url())
        self.state = CoordinatorState(self.engine)
        self.directory = WorkerDirectory()
        self.models = ModelCatalog(registry.get_model, config.store_dir,
                                   lambda: [e for n, e in self.directory.nodes() if not self.directory.is_down(n)])
        self.ctx = PipelineContext(
            account=account, directory=self.directory, state=self.state, slash=self._slash,
            step_timeout_s=config.step_timeout_s,
            tolerance=Tolerance(config.verify_rel_error, config.verify_top_k),
            verify_share=config.verify_share, salt=secrets.token_bytes(16),
        )
        self.runner = JobRunner(registry, self.ctx, commit_wait_s=config.commit_wait_s,
                                load_penalty_s=config.load_penalty_s)
        self.watcher = EventWatcher(registry, self.engine, f"coordinator:{account.address.lower()}",
                                    {name: self._on_event for name in WATCHED}, poll_interval=config.poll_interval_s)
        self._pending_events: list[DecodedEvent] = []
        self._jobs_sem = asyncio.Semaphore(config.max_concurrent_jobs)
        self._tasks: dict[int, asyncio.Task[Any]] = {}
        self._stop = asyncio.Event()
        self.endpoint = config.endpoint

    # -- setup
    def check_approved(self) -> None:
        if not self.registry.is_coordinator(self.account.address):
            raise NotCoordinatorError(
                f"account {self.account.address} is not an approved coordinator of the registry "
                f"{self.registry.address}: the registry's owner must call setCoordinator({self.account.address}, "
                f"ENDPOINT, true) (on a devnet: `shardnet devnet --coordinator {self.account.address}`)"
            )

    def rebuild_directory(self) -> None:
        """Load every live assignment and its node's endpoint from the chain's views."""
        for model_id in range(1, self.registry.model_count() + 1):
            for aid in self.registry.live_assignments(model_id):
                a = self.registry.get_assignment(aid)
                self._learn_node(a.node)
                self.directory.announce(aid, a.node, a.model_id, a.span)
        for slashed in self.state.slashed_nodes():
            self.directory.exclude(slashed)
        log.info("directory: %d live workers", len(self.directory.nodes()))

    def _learn_node(self, node: str) -> None:
        info = self.registry.get_node(node)
        if info.endpoint:
            self.directory.set_endpoint(node, info.endpoint)
        if info.jailed:
            self.directory.exclude(node)

    # -- events (the watcher's thread collects them; the loop applies them)
    def _on_event(self, event: DecodedEvent, session: Session) -> None:
        if event.name == "JobSubmitted":
            a = event.args
            job_id = int(a["jobId"])
            row = session.get(JobRow, job_id)
            if row is None:
                row = JobRow(job_id=job_id, status=WAITING)
                session.add(row)
            row.client = str(a["client"]).lower()
            row.model_id = int(a["modelId"])
            row.input_hash = "0x" + bytes(a["inputHash"]).hex()
            row.max_tokens = int(a["maxTokens"])
            row.escrow_wei = str(int(a["escrow"]))
            row.deadline = int(a["deadline"])
        elif event.name == "JobCancelled":
            row = session.get(JobRow, int(event.args["jobId"]))
            if row is not None and row.status not in DONE:
                row.status = CANCELLED
                row.error = "cancelled by its client after the deadline"
        self._pending_events.append(event)

    async def _apply(self, event: DecodedEvent) -> None:
        """Apply one event to the in-memory directory (on the loop; chain reads in a thread)."""
        a = event.args
        if event.name == "ShardAnnounced":
            info = await asyncio.to_thread(self.registry.get_node, a["node"])
            if info.endpoint:
                self.directory.set_endpoint(a["node"], info.endpoint)
            if info.jailed:
                self.directory.exclude(a["node"])
            self.directory.announce(int(a["assignmentId"]), a["node"], int(a["modelId"]),
                                    LayerSpan(int(a["start"]), int(a["end"])))
        elif event.name == "ShardReleased":
            self.directory.release(int(a["assignmentId"]))
        elif event.name in ("NodeRegistered", "EndpointUpdated"):
            self.directory.set_endpoint(a["node"], a["endpoint"])
        elif event.name == "NodeSlashed":
            self.directory.exclude(a["node"])
        elif event.name == "JobSubmitted":
            row = self.state.get_job(int(a["jobId"]))
            if row is not None and row.status == QUEUED:
                self.schedule(row.job_id)

    async def _watch(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                await asyncio.to_thread(self.watcher.poll_once)
                failures = 0
            except Exception as exc:  # noqa: BLE001 - the watcher must outlive a flaky node or a bad event
                failures += 1
                log.warning("watcher: %s (retrying)", exc)
            events, self._pending_events = self._pending_events, []
            for event in events:
                try:
                    await self._apply(event)
                except ShardnetError as exc:
                    log.warning("event %s: %s", event.name, exc)
            if failures or self.watcher.lag == 0:
                delay = min(self.config.poll_interval_s * 2**failures, 10.0)
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                except TimeoutError:
                    pass

    async def _health(self, node: str, endpoint: str) -> float:
        t0 = time.perf_counter()
        async with aiohttp.ClientSession() as http, http.get(
            endpoint + "/health", timeout=aiohttp.ClientTimeout(total=min(2.0, self.config.health_interval_s * 2))
        ) as resp:
            if resp.status != 200:
                raise ShardnetError(f"/health answered {resp.status}")
        return time.perf_counter() - t0

    # -- jobs
    def model(self, model_id: int) -> ServedModel:
        return self.models.get(model_id)

    async def accept_prompt(self, job_id: int, prompt: str, params: SamplingParams) -> JobRow:
        """Take a client's prompt for an on-chain job: it must hash to the job's inputHash."""
        try:
            job = await asyncio.to_thread(self.registry.get_job, job_id)
        except ShardnetError as exc:
            raise PromptRejected(f"job {job_id} does not exist on chain ({exc}); submit it first", 404) from exc
        if job.status != JobStatus.Submitted:
            raise PromptRejected(f"job {job_id} is {job.status.name} on chain; only a Submitted job takes a prompt", 409)
        if keccak(prompt.encode("utf-8")) != job.input_hash:
            raise PromptRejected(
                f"keccak256 of this prompt is not the inputHash of job {job_id} on chain; hand over exactly the "
                "prompt (UTF-8) whose hash was submitted", 400)
        row = self.state.get_job(job_id)
        if row is not None and row.status not in (WAITING, QUEUED):
            raise PromptRejected(f"job {job_id} is already {row.status}", 409)
        row = self.state.upsert_job(
            job_id, status=QUEUED, prompt=prompt, sampling=json.dumps(params.with_seed().__dict__),
            client=job.client.lower(), model_id=job.model_id, input_hash="0x" + job.input_hash.hex(),
            max_tokens=job.max_tokens, escrow_wei=str(job.escrow), deadline=job.deadline)
        self.schedule(job_id)
        return row

    def schedule(self, job_id: int, on_token: Any = None) -> asyncio.Task[Any]:
        """Run the job (once: a job already running returns its task)."""
        for done in [j for j, t in self._tasks.items() if t.done()]:
            del self._tasks[done]
        task = self._tasks.get(job_id)
        if task is None:
            task = asyncio.ensure_future(self._run_job(job_id, on_token))
            task.add_done_callback(_consume)
            self._tasks[job_id] = task
        return task

    async def _run_job(self, job_id: int, on_token: Any) -> Any:
        async with self._jobs_sem:
            row = self.state.get_job(job_id)
            if row is None or row.status != QUEUED or row.prompt is None:
                return None
            params = SamplingParams(**json.loads(row.sampling or "{}"))
            try:
                model = await asyncio.to_thread(self.model, int(row.model_id or 0))
            except ShardnetError as exc:
                self.state.upsert_job(job_id, status=FAILED, error=str(exc))
                await self.runner.fail_on_chain(job_id, str(exc))
                raise
            return await self.runner.run(job_id, model, row.prompt, params, on_token)

    async def submit_own_job(self, model_id: int, prompt: str, max_tokens: int, params: SamplingParams) -> int:
        """For the OpenAI API: pay a job into escrow from the coordinator's own account; returns its id."""
        quote = await asyncio.to_thread(self.registry.quote, model_id, max_tokens)
        result = await asyncio.to_thread(self.registry.submit_job, model_id, keccak(prompt.encode()), max_tokens, quote)
        job_id = int(result.event("JobSubmitted").args["jobId"])
        self.state.upsert_job(job_id, status=QUEUED, source="api", prompt=prompt,
                              sampling=json.dumps(params.with_seed().__dict__), client=self.account.address.lower(),
                              model_id=model_id, input_hash="0x" + keccak(prompt.encode()).hex(),
                              max_tokens=max_tokens, escrow_wei=str(quote))
        return job_id

    async def recover(self) -> None:
        """Deal with jobs a previous run left unfinished (see the module docstring)."""
        for row in self.state.jobs(statuses=[QUEUED, RUNNING, FINALIZING]):
            job = await asyncio.to_thread(self.registry.get_job, row.job_id)
            if row.status == QUEUED and job.status == JobStatus.Submitted:
                log.info("job %d: prompt held, not routed yet: running it", row.job_id)
                self.schedule(row.job_id)
            elif job.status in (JobStatus.Submitted, JobStatus.Routed):
                reason = "coordinator restarted mid-job; its worker sessions are gone"
                log.warning("job %d was %s when the coordinator stopped: failing it on chain", row.job_id, row.status)
                self.state.upsert_job(row.job_id, status=FAILED, error=reason)
                await self.runner.fail_on_chain(row.job_id, reason)
            else:
                status = {JobStatus.Finalized: "finalized", JobStatus.Cancelled: "cancelled"}.get(job.status, FAILED)
                self.state.upsert_job(row.job_id, status=status)

    async def fail_interrupted(self, job_ids: list[int]) -> None:
        """On shutdown: fail on chain (full refund now, not at the next start) the jobs stopped mid-generation.

        A job whose prompt is held but that never started stays queued: the next start runs it.
        """
        for job_id in job_ids:
            row = self.state.get_job(job_id)
            if row is None or row.status not in (RUNNING, FINALIZING):
                continue
            reason = "coordinator stopped mid-job; its worker sessions are gone"
            log.warning("job %d was %s when the coordinator stopped: failing it on chain", job_id, row.status)
            self.state.upsert_job(job_id, status=FAILED, error=reason)
            await self.runner.fail_on_chain(job_id, reason)
            job = await asyncio.to_thread(self.registry.get_job, job_id)
            if job.status == JobStatus.Finalized:  # its finalizeJob went through just before the stop
                self.state.upsert_job(job_id, status=FINALIZED, error=None)

    # -- lifecycle
    async def run_forever(self, ready: asyncio.Event | None = None) -> None:
        from aiohttp import web

        from coordinator.api import make_app

        await asyncio.to_thread(self.check_approved)
        await asyncio.to_thread(self.rebuild_directory)
        await asyncio.to_thread(self.watcher.catch_up)
        events, self._pending_events = self._pending_events, []
        for event in events:
            if event.name != "JobSubmitted":
                await self._apply(event)
        app = make_app(self)
        # slow peers hold nothing for ever: no whole request head within the timeout closes the connection,
        # and one IP holds at most COORDINATOR_MAX_CONNECTIONS_PER_IP connections (issue 11)
        runner = web.AppRunner(app, access_log=None, keepalive_timeout=DEFAULT_HEADER_TIMEOUT_S,
                               lingering_time=DEFAULT_HEADER_TIMEOUT_S)
        await runner.setup()
        ConnectionGuard.install(runner, max_per_ip=COORDINATOR_MAX_CONNECTIONS_PER_IP)
        site = web.TCPSite(runner, self.config.host, self.config.port)
        await site.start()
        port = runner.addresses[0][1]
        self.endpoint = f"http://{self.config.host}:{port}"
        log.info("coordinator %s listening on %s", self.account.address, self.endpoint)
        background = [asyncio.ensure_future(self._watch()),
                      asyncio.ensure_future(probe_forever(self.directory, self._health, self.config.health_interval_s))]
        await self.recover()
        if ready is not None:
            ready.set()
        try:
            await self._stop.wait()
        finally:
            jobs = dict(self._tasks)
            for task in background + list(jobs.values()):
                task.cancel()
            await asyncio.gather(*background, *jobs.values(), return_exceptions=True)
            await self.fail_interrupted(list(jobs))
            await runner.cleanup()
            self.engine.dispose()

    def stop(self) -> None:
        self._stop.set()

    # -- slashing
    async def _slash(self, node: str, evidence: bytes, job_id: int) -> str | None:
        try:
            result = await asyncio.to_thread(self.registry.slash, node, evidence, job_id)
            return result.tx_hash
        except ShardnetError as exc:
            log.error("slashing %s failed: %s", node, exc)
            return None

    def job_view(self, row: JobRow, *, reveal: bool = False) -> dict[str, Any]:
        """The JSON of a job (GET /v1/jobs/{id}); the output only with `reveal` (the job's client asked)."""
        hops = self.state.hops(row.job_id)
        generated = row.status in (FINALIZING, FINALIZED)
        return {
            "job_id": row.job_id,
            "status": row.status,
            "done": row.status in DONE,
            "model_id": row.model_id,
            "client": row.client,
            "max_tokens": row.max_tokens,
            "prompt_tokens": row.prompt_tokens,
            "output": row.output if generated and reveal else None,
            "output_tokens": json.loads(row.output_tokens) if generated and reveal and row.output_tokens else None,
            "output_hidden": generated and not reveal,
            "output_hash": row.output_hash,
            "finish_reason": row.finish_reason,
            "error": row.error,
            "finalize_tx": row.tx_finalize,
            "route": [{"hop": h.hop_index, "node": h.node, "endpoint": h.endpoint, "span": [h.span_start, h.span_end],
                       "positions": h.positions, "layer_tokens": h.layer_tokens, "reason": h.reason}
                      for h in hops],
        }

