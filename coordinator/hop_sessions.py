"""Worker sessions of one generation: the pipeline's shared settings, an open session, and opening and closing one.

A session is opened with an EIP-712 ticket in the registry's domain (of the job for a routed hop, of no job for
a verification session); a busy worker (429, 503 full) is asked again for a while, never marked down. Closing
a routed hop's session hands its job commitment to the job's hops for the settlement.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from eth_account.signers.local import LocalAccount

from coordinator.adapters import AdapterStore
from coordinator.directory import is_busy
from coordinator.hops import JobHops
from coordinator.push_answers import PushAnswers
from coordinator.router import Router
from coordinator.state import CoordinatorState
from coordinator.step_coalescer import StepCoalescer
from coordinator.verifier import Tolerance
from shardnet.chain.registry import Registry
from shardnet.errors import ShardnetError
from shardnet.peer.client import StepResult, WorkerClient
from shardnet.peer.errors import WorkerAPIError
from shardnet.span import LayerSpan
from shardnet.wire.eip712 import Domain
from shardnet.wire.tickets import sign_ticket

log = logging.getLogger(__name__)

TICKET_TTL_S = 3600
CLOSE_TIMEOUT_S = 3.0


class GenerationError(ShardnetError):
    """A generation could not go on (no worker left for a span, failover exhausted)."""


@dataclass
class PipelineContext:
    """A pipeline's collaborators and settings, shared by every job: passed in, never called back through closures."""

    account: LocalAccount  # signs the session tickets
    router: Router  # route choice, and (its directory) liveness, load and timings
    registry: Registry  # reads (the EIP-712 domain); slashing evidence is recorded off chain
    state: CoordinatorState  # steps, verifications and slashes
    step_timeout_s: float = 5.0
    tolerance: Tolerance = field(default_factory=Tolerance)
    verify_share: float = 0.0
    #: share of settled jobs whose hops are judged by verifiers the registry draws (coordinator.job_checks)
    check_share: float = 1.0
    #: one thread fingerprinting relayed outputs (coordinator.hops.JobHops.relay)
    fingerprint_pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="fingerprints")
    )
    salt: bytes = b""
    codec: str = "fp32"
    max_failovers: int = 4
    busy_wait_s: float = 30.0  # how long a busy worker (429, 503 full) is waited for when opening a session
    #: "relay": the coordinator sends each hop its input; "push": each worker forwards to the next
    #: (coordinator.push_path); verification and failover work in both
    data_path: str = "relay"
    #: push mode, greedy jobs: the last worker answers with its top-k logits and ids, not every logit
    compact_answers: bool = False
    #: push mode: where the last worker sends its answers straight to this coordinator (coordinator.push_answers)
    push_answers: PushAnswers | None = None
    #: LoRA adapters of jobs: every session of such a job gets its span's part right after the open
    adapters: AdapterStore = field(default_factory=AdapterStore)
    #: sends the steps of concurrent jobs toward one worker together (None: each step in its own request)
    coalescer: StepCoalescer | None = None
    _domain: Domain | None = None

    @property
    def domain(self) -> Domain:
        """The registry's EIP-712 domain (tickets are signed in it), read once."""
        if self._domain is None:
            self._domain = self.registry.domain()
        return self._domain


@dataclass(eq=False)
class OpenSession:
    """One open worker session: a routed hop of the job, or a verification (shadow / referee) session."""

    node: str
    endpoint: str
    span: LayerSpan
    client: WorkerClient
    session_id: str
    hop_index: int | None  # None for a verification session (not a hop of the job)
    history: list[tuple[int, torch.Tensor]] = field(default_factory=list)  # (start_pos, input) per step
    fed: int = 0  # shadow sessions: how many history entries of the verified slot they consumed
    last: StepResult | None = None
    shadow: OpenSession | None = None


async def open_session(
    ctx: PipelineContext,
    job_hops: JobHops,
    node: str,
    endpoint: str,
    span: LayerSpan,
    hop_index: int | None,
    *,
    next_hop: dict[str, str] | None = None,
    answer: str = "full",
    answer_to: str | None = None,
) -> OpenSession:
    """Open a session; a busy worker (429, 503 full) is asked again for up to `busy_wait_s`, never marked down."""
    deadline = time.monotonic() + ctx.busy_wait_s
    delay = 0.05
    while True:
        try:
            return await open_session_once(
                ctx,
                job_hops,
                node,
                endpoint,
                span,
                hop_index,
                next_hop=next_hop,
                answer=answer,
                answer_to=answer_to,
            )
        except WorkerAPIError as exc:
            if not is_busy(exc) or time.monotonic() + delay > deadline:
                raise
            ctx.router.directory.mark_busy(node, str(exc))
        await asyncio.sleep(delay)
        delay = min(delay * 2, 1.0)


async def open_session_once(
    ctx: PipelineContext,
    job_hops: JobHops,
    node: str,
    endpoint: str,
    span: LayerSpan,
    hop_index: int | None,
    *,
    next_hop: dict[str, str] | None = None,
    answer: str = "full",
    answer_to: str | None = None,
) -> OpenSession:
    """Open a session with one request (`next_hop`, `answer`: push mode, `coordinator.push_path`) (a busy worker's refusal is raised to the caller)."""
    # with a coalescer, every session to a worker shares its one bounded connection pool
    pool = ctx.coalescer.http_session(endpoint) if ctx.coalescer is not None else None
    client = WorkerClient(endpoint, timeout_s=ctx.step_timeout_s, session=pool)
    session_id = uuid.uuid4().hex
    domain = ctx.domain
    # a verification session gets a ticket of no job (0): its worker signs no commitment and cannot post one
    job_id = job_hops.job_id if hop_index is not None else 0
    ticket = sign_ticket(
        ctx.account,
        worker=node,
        session_id=session_id,
        job_id=job_id,
        span=span,
        max_positions=job_hops.max_positions,  # a worker's commitment (and post) bills at most this
        expires_at=int(time.time()) + TICKET_TTL_S,
        chain_id=domain.chain_id,
        registry=domain.registry,
    )
    try:
        # the job's worst case is reserved on the worker at open: it refuses (busy) rather than running out later
        opened = await client.open_session(
            ticket,
            ctx.codec,
            next=next_hop,
            max_positions=job_hops.max_positions,
            answer=answer,
            answer_to=answer_to,
        )
    except BaseException:
        await client.aclose()
        raise
    if list(opened.get("span", [])) != [span.start, span.end]:
        await client.aclose()
        raise GenerationError(
            f"worker {endpoint} serves {opened.get('span')}, not {span} as announced on chain"
        )
    adapter = ctx.adapters.for_job(job_hops.job_id)
    part = adapter.part(span) if adapter is not None else b""
    if part:  # before any step; a worker that refuses it or states another hash fails like a failed open
        try:
            await client.load_adapter(str(opened["session_id"]), part)
        except BaseException:
            await client.aclose()
            raise
    if hop_index is not None:  # routing load counts routed sessions; verification ones compute now and then
        ctx.router.directory.add_load(node, +1)
        ctx.router.directory.session_opened(node, job_hops.job_id)
        job_hops.sessions[hop_index] = job_hops.sessions.get(hop_index, 0) + 1
    return OpenSession(node, endpoint, span, client, str(opened["session_id"]), hop_index)


async def close_session(ctx: PipelineContext, job_hops: JobHops, slot: OpenSession) -> None:
    """Close a session (its worker then commits to its steps); a routed hop's commitment goes to `job_hops`."""
    if slot.hop_index is not None:
        ctx.router.directory.add_load(slot.node, -1)
    try:
        closed = await asyncio.wait_for(slot.client.close_session(slot.session_id), CLOSE_TIMEOUT_S)
        if slot.hop_index is not None:  # verification sessions are not hops of the job: never settled
            job_hops.handed(slot.hop_index, closed.job_commitment)
    except (WorkerAPIError, TimeoutError, KeyError, ValueError) as exc:
        log.debug("closing session on %s: %s", slot.endpoint, exc)
    finally:
        await slot.client.aclose()
