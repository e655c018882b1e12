"""The coordinator service: chain watcher, worker directory and probes, job scheduling, HTTP API.

Lifecycle (`shardnet.service`: `start`, ready, `drain`, `stop`): start checks the account is an approved coordinator on chain,
opens the database, rebuilds the directory of live workers from the chain's views, and recovers jobs a
previous run left behind (`JobScheduler.recover`, by the rules of `coordinator.lifecycle`). Then the watcher
follows events from its durable cursor: the job events go to the job state machine, `CommitmentPosted` wakes
settlements, the rest updates the directory behind the one `Router`.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
from eth_account.signers.local import LocalAccount
from sqlalchemy.orm import Session

from coordinator.adapters import AdapterStore
from coordinator.catalog import ModelCatalog
from coordinator.commitments import CommitmentBoard
from coordinator.config import CoordinatorConfig
from coordinator.directory import WorkerDirectory, probe_forever
from coordinator.hop_sessions import PipelineContext
from coordinator.jobs import JobRunner
from coordinator.lifecycle import JobLifecycle
from coordinator.push_answers import PATH as ANSWERS_PATH
from coordinator.push_answers import PushAnswers, answers_base
from coordinator.router import Router
from coordinator.scheduler import JobScheduler
from coordinator.state import CoordinatorState
from coordinator.step_coalescer import StepCoalescer
from coordinator.verifier import Tolerance
from shardnet.chain.heads import HeadSubscription, ws_url_for
from shardnet.chain.registry import Registry
from shardnet.chain.tx import DecodedEvent
from shardnet.chain.watcher import EventWatcher
from shardnet.db import make_engine
from shardnet.errors import ShardnetError
from shardnet.retry import Backoff, aretry_until_stopped
from shardnet.service import Lifecycle
from shardnet.span import LayerSpan
from shardnet.wire.http_guard import DEFAULT_HEADER_TIMEOUT_S, ConnectionGuard

log = logging.getLogger(__name__)

#: API users may sit behind one proxy address and stream many answers at once: a generous cap
COORDINATOR_MAX_CONNECTIONS_PER_IP = 256


def io_threads(max_concurrent_jobs: int) -> int:
    """Threads for chain calls: two per job running at once (its submission or settlement and a read) and 8 for the
    watcher, the health probes and the API's own reads; at most 64."""
    return min(64, 2 * max_concurrent_jobs + 8)


WATCHED = (
    "JobSubmitted",
    "JobCancelled",
    "CommitmentPosted",
    "ShardAnnounced",
    "ShardReleased",
    "NodeRegistered",
    "EndpointUpdated",
    "NodeSlashed",
)


class NotCoordinatorError(ShardnetError):
    """The coordinator's account is not approved on chain."""


class CoordinatorService:
    def __init__(self, config: CoordinatorConfig, registry: Registry, account: LocalAccount) -> None:
        self.config = config
        self.registry = registry
        self.account = account
        self.engine = make_engine(config.database_url())
        self.state = CoordinatorState(self.engine)
        self.directory = WorkerDirectory()
        self.router = Router(self.directory, load_penalty_s=config.load_penalty_s)
        self.catalog = ModelCatalog(registry.get_model, config.store_dir, self.directory.live_endpoints)
        self.lifecycle = JobLifecycle(self.state)
        self.commitments = CommitmentBoard()
        self.adapters = AdapterStore()  # LoRA adapters of API requests (coordinator.adapters)
        self.push_answers = PushAnswers()  # push mode: answers straight from the last worker
        ctx = PipelineContext(
            account=account,
            adapters=self.adapters,
            router=self.router,
            registry=registry,
            state=self.state,
            step_timeout_s=config.step_timeout_s,
            tolerance=Tolerance(config.verify_rel_error, config.verify_top_k),
            verify_share=config.verify_share,
            check_share=config.check_share,
            data_path=config.data_path,
            compact_answers=config.compact_answers,
            push_answers=self.push_answers,
            salt=secrets.token_bytes(16),
            coalescer=StepCoalescer(
                timeout_s=config.step_timeout_s,
                max_steps=config.coalesce_max_steps,
                max_in_flight=config.coalesce_in_flight,
                max_positions_in_flight=config.max_positions_in_flight,
                gather_s=config.coalesce_gather_ms / 1000,
            ),
        )
        runner = JobRunner(ctx, self.lifecycle, self.commitments, settle_batch_s=config.settle_batch_s)
        self.jobs = JobScheduler(
            registry,
            account,
            self.lifecycle,
            runner,
            self.catalog,
            max_concurrent_jobs=config.max_concurrent_jobs,
        )
        self.watcher = EventWatcher(
            registry,
            self.engine,
            f"coordinator:{account.address.lower()}",
            {name: self._on_event for name in WATCHED},
            poll_interval=config.poll_interval_s,
            confirmations=config.confirmations,
        )
        self._pending_events: list[DecodedEvent] = []
        self._stop = asyncio.Event()  # set when draining: the watcher and its retries end
        self._chain_wake = (
            asyncio.Event()
        )  # set when the node pushed a new block: poll now (shardnet.chain.heads)
        self.heads: HeadSubscription | None = None
        self._background: list[asyncio.Task[Any]] = []
        self._runner: Any = None  # aiohttp's AppRunner once started
        self._probe_http: aiohttp.ClientSession | None = None  # the /health probes' connections (kept alive)
        self.service_lifecycle = Lifecycle("coordinator")  # start, ready, drain, stop (shardnet.service)
        self.endpoint = config.endpoint

    # -- setup
    def check_approved(self) -> None:
        if not self.registry.is_coordinator(self.account.address):
            raise NotCoordinatorError(
                f"account {self.account.address} is not an approved coordinator of the registry "
                f"{self.registry.address}: the registry's owner must call setCoordinator({self.account.address}, "
                f"ENDPOINT, true) (on a devnet: `shardnet devnet --coordinator {self.account.address}`)"
            )

    def _answers_base(self) -> str:
        """Where the last worker of a push chain sends its answers (`coordinator.push_answers.answers_base`)."""
        try:
            listed: str | None = self.registry.coordinator_endpoint(self.account.address)
        except Exception as exc:  # a chain hiccup must not stop the start: the answers then go back the chain
            log.warning("cannot read this coordinator's endpoint from the registry (%s)", exc)
            listed = None
        base = answers_base(self.config.public_url, self.endpoint, listed)
        if (
            self.config.data_path == "push"
            and base == self.endpoint.rstrip("/")
            and not self.config.public_url
        ):
            log.info(
                "push answers are taken at %s (set --public-url if workers reach this coordinator elsewhere)",
                base,
            )
        return base

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
        a = event.args
        if event.name == "JobSubmitted":
            if str(a["coordinator"]).lower() != self.account.address.lower():
                return  # bound to another coordinator at submission: not ours to run
            self.lifecycle.on_submitted(
                session,
                int(a["jobId"]),
                {
                    "client": str(a["client"]).lower(),
                    "model_id": int(a["modelId"]),
                    "input_hash": "0x" + bytes(a["inputHash"]).hex(),
                    "max_tokens": int(a["maxTokens"]),
                    "escrow_wei": str(int(a["escrow"])),
                    "deadline": int(a["deadline"]),
                },
            )
        elif event.name == "JobCancelled":
            self.lifecycle.on_cancelled(session, int(a["jobId"]))
        else:
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
            self.directory.announce(
                int(a["assignmentId"]),
                a["node"],
                int(a["modelId"]),
                LayerSpan(int(a["start"]), int(a["end"])),
            )
        elif event.name == "ShardReleased":
            self.directory.release(int(a["assignmentId"]))
        elif event.name in ("NodeRegistered", "EndpointUpdated"):
            self.directory.set_endpoint(a["node"], a["endpoint"])
        elif event.name == "NodeSlashed":
            self.directory.exclude(a["node"])
        elif event.name == "CommitmentPosted":
            self.commitments.posted(int(a["jobId"]), str(a["node"]))

    async def _poll_chain(self) -> int:
        self._pending_events = []  # a failed poll rolled its range back: its events come again
        return await asyncio.to_thread(self.watcher.poll_once)

    async def _watch(self) -> None:
        # the watcher must outlive a flaky node or a bad event: failed polls are retried with back-off
        backoff = Backoff(first_s=self.config.poll_interval_s, max_s=max(10.0, self.config.poll_interval_s))
        while not self._stop.is_set():
            self._chain_wake.clear()  # before the poll: a block announced during it wakes the next wait
            if (
                await aretry_until_stopped(
                    self._poll_chain, stop=self._stop, backoff=backoff, what="watcher: poll"
                )
                is None
            ):
                break
            events, self._pending_events = self._pending_events, []
            for event in events:
                try:
                    await self._apply(event)
                except ShardnetError as exc:
                    log.warning("event %s: %s", event.name, exc)
            if self.watcher.lag == 0:
                try:
                    await asyncio.wait_for(self._chain_wake.wait(), self.config.poll_interval_s)
                except TimeoutError:
                    pass

    async def _health(self, node: str, endpoint: str) -> float:
        """One /health round trip to `endpoint` in seconds, over the probes' kept-alive connections: a probe measures
        the link's round trip, not a TCP handshake besides (the router compares replicas by it)."""
        if self._probe_http is None or self._probe_http.closed:
            self._probe_http = aiohttp.ClientSession()
        t0 = time.perf_counter()
        async with self._probe_http.get(
            endpoint + "/health",
            timeout=aiohttp.ClientTimeout(total=min(2.0, self.config.health_interval_s * 2)),
        ) as resp:
            await resp.read()
            if resp.status != 200:
                raise ShardnetError(f"/health answered {resp.status}")
        return time.perf_counter() - t0

    # -- lifecycle (shardnet.service: start, ready, drain, stop)
    async def start(self) -> None:
        """Check the account, rebuild the directory, catch up with the chain, listen, recover jobs."""
        from aiohttp import web

        # every chain call runs in a thread (`asyncio.to_thread`): Python's default pool has cores + 4 threads (6 on
        # 2 cores), and 16 jobs starting at once queued their quotes, submissions (each waits for its receipt) and
        # reads behind each other there, before any prefill
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(io_threads(self.config.max_concurrent_jobs), thread_name_prefix="chain-io")
        )

        from coordinator.api import make_app

        await asyncio.to_thread(self.check_approved)
        await asyncio.to_thread(self.rebuild_directory)
        await asyncio.to_thread(self.watcher.catch_up)
        events, self._pending_events = self._pending_events, []
        for event in events:
            await self._apply(event)
        # slow peers hold nothing for ever: no whole request head within the timeout closes the connection,
        # and one IP holds at most COORDINATOR_MAX_CONNECTIONS_PER_IP connections (issue 11)
        self._runner = web.AppRunner(
            make_app(self),
            access_log=None,
            keepalive_timeout=DEFAULT_HEADER_TIMEOUT_S,
            lingering_time=DEFAULT_HEADER_TIMEOUT_S,
        )
        await self._runner.setup()
        ConnectionGuard.install(self._runner, max_per_ip=COORDINATOR_MAX_CONNECTIONS_PER_IP)
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        port = self._runner.addresses[0][1]
        self.endpoint = f"http://{self.config.host}:{port}"
        self.push_answers.url = self._answers_base() + ANSWERS_PATH
        log.info("coordinator %s listening on %s", self.account.address, self.endpoint)
        ws_url = ws_url_for(self.registry.rpc_url, self.config.ws_url)
        if ws_url is not None:  # new blocks pushed: events handled within milliseconds, polling the fallback
            loop = asyncio.get_running_loop()
            self.heads = HeadSubscription(
                ws_url, lambda _n: loop.call_soon_threadsafe(self._chain_wake.set), name="coordinator chain"
            ).start()
        self._background = [
            asyncio.ensure_future(self._watch()),
            asyncio.ensure_future(probe_forever(self.directory, self._health, self.config.health_interval_s)),
        ]
        await self.jobs.recover()

    async def _stop_heads(self) -> None:
        heads, self.heads = self.heads, None
        if heads is not None:
            await asyncio.to_thread(heads.stop)

    async def drain(self) -> None:
        """Stop following the chain and probing; the jobs in flight are stopped by `stop`."""
        self._stop.set()
        await self._stop_heads()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    async def stop(self) -> None:
        """Stop the jobs in flight (by the rules of `coordinator.lifecycle`), close the HTTP server and database."""
        self._stop.set()
        await self._stop_heads()
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._probe_http is not None:
            await self._probe_http.close()
        await self.jobs.stop()
        if self.jobs.runner.ctx.coalescer is not None:
            await self.jobs.runner.ctx.coalescer.aclose()
        if self._runner is not None:
            await self._runner.cleanup()
        self.engine.dispose()
