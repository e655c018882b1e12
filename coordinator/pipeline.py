"""One generation's sessions along a route: stepping through the hops, failover, and sampled verification.

The coordinator drives every hop itself (no push mode): it sends a step's input to hop 0, that hop's
output to hop 1, and so on, so it holds each hop's whole input history with positions. That history
makes both recoveries cheap and exact:

- Failover: when a step to a worker fails or times out, the worker is marked down, a replacement chain
  for the same span is chosen by the router (a new hop of the job, off chain), the span's past inputs
  are replayed into it chunk by chunk with their original positions (so its KV cache is computed exactly
  as the dead worker's was), and the failed step is sent again. The output is identical to a fault-free
  run; the stall is one timeout (or a refused connection) plus the replay.
- Verification: for a sampled (hop, step), a replica of the same span runs the hop's inputs up to that
  step in a "shadow" session (kept open, so each input is computed once) and the outputs are compared
  within a tolerance (`coordinator.verifier`). On disagreement a third worker referees from scratch; the
  outlier is excluded from routing and its evidence recorded (not slashed on chain: protocol v2 needs
  verdicts of verifiers the registry draws), and, if it was the routed worker, `CheatDetected` tells the
  caller to run the job again on honest workers (the cheat's hop is left out of the settlement).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field

import torch
from eth_account.signers.local import LocalAccount

from coordinator.directory import is_busy
from coordinator.hops import JobHops
from coordinator.router import RouteHop, Router
from coordinator.state import CoordinatorState, StepRecord
from coordinator.verifier import (
    Tolerance,
    compare,
    evidence_hash,
    evidence_record,
    pick_outlier,
    should_verify,
)
from shardnet.chain.registry import Registry
from shardnet.errors import ShardnetError
from shardnet.peer.client import StepResult, WorkerClient
from shardnet.peer.errors import WorkerAPIError
from shardnet.span import LayerSpan
from shardnet.wire.commitment import step_hash
from shardnet.wire.eip712 import Domain
from shardnet.wire.frames import encode_frame
from shardnet.wire.tickets import sign_ticket

log = logging.getLogger(__name__)

TICKET_TTL_S = 3600
CLOSE_TIMEOUT_S = 3.0


class GenerationError(ShardnetError):
    """A generation could not go on (no worker left for a span, failover exhausted)."""


class CheatDetected(ShardnetError):
    """A routed worker was proven wrong by a referee (and excluded): run the job again without it."""

    def __init__(self, node: str) -> None:
        super().__init__(
            f"worker {node} was caught sending wrong outputs (evidence recorded); re-running on honest workers"
        )
        self.node = node


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
    salt: bytes = b""
    codec: str = "fp32"
    max_failovers: int = 4
    busy_wait_s: float = 30.0  # how long a busy worker (429, 503 full) is waited for when opening a session
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


class Pipeline:
    """The open sessions of one generation attempt of one job."""

    def __init__(
        self,
        ctx: PipelineContext,
        job_hops: JobHops,
        *,
        model_id: int,
        num_layers: int,
        reason: str = "route",
    ) -> None:
        self.ctx = ctx
        self.directory = ctx.router.directory
        self.reason = reason  # why this generation's new hops are added: "route", or "rerun" after a cheat
        self.job_hops = job_hops
        self.model_id = model_id
        self.num_layers = num_layers
        self.slots: list[OpenSession] = []
        self.records: list[StepRecord] = []
        self.step_index = 0
        self.failovers: list[dict[str, object]] = []  # what happened, for logs and the job record
        self._extra: list[OpenSession] = []  # shadow / referee sessions to close
        self._closing: set[asyncio.Future[None]] = set()  # closes of failed sessions, in the background

    # -- sessions
    async def _open(self, node: str, endpoint: str, span: LayerSpan, hop_index: int | None) -> OpenSession:
        """Open a session; a busy worker (429, 503 full) is asked again for up to `busy_wait_s`, never marked down."""
        deadline = time.monotonic() + self.ctx.busy_wait_s
        delay = 0.05
        while True:
            try:
                return await self._open_once(node, endpoint, span, hop_index)
            except WorkerAPIError as exc:
                if not is_busy(exc) or time.monotonic() + delay > deadline:
                    raise
                self.directory.mark_busy(node, str(exc))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _open_once(
        self, node: str, endpoint: str, span: LayerSpan, hop_index: int | None
    ) -> OpenSession:
        client = WorkerClient(endpoint, timeout_s=self.ctx.step_timeout_s)
        session_id = uuid.uuid4().hex
        domain = self.ctx.domain
        # a verification session gets a ticket of no job (0): its worker signs no commitment and cannot post one
        job_id = self.job_hops.job_id if hop_index is not None else 0
        ticket = sign_ticket(
            self.ctx.account,
            worker=node,
            session_id=session_id,
            job_id=job_id,
            span=span,
            expires_at=int(time.time()) + TICKET_TTL_S,
            chain_id=domain.chain_id,
            registry=domain.registry,
        )
        try:
            opened = await client.open_session(ticket, self.ctx.codec)
        except BaseException:
            await client.aclose()
            raise
        if list(opened.get("span", [])) != [span.start, span.end]:
            await client.aclose()
            raise GenerationError(
                f"worker {endpoint} serves {opened.get('span')}, not {span} as announced on chain"
            )
        if (
            hop_index is not None
        ):  # routing load counts routed sessions; verification ones compute now and then
            self.directory.add_load(node, +1)
        return OpenSession(node, endpoint, span, client, str(opened["session_id"]), hop_index)

    async def _close(self, slot: OpenSession) -> None:
        if slot.hop_index is not None:
            self.directory.add_load(slot.node, -1)
        try:
            closed = await asyncio.wait_for(slot.client.close_session(slot.session_id), CLOSE_TIMEOUT_S)
            if slot.hop_index is not None:  # verification sessions are not hops of the job: never settled
                self.job_hops.handed(slot.hop_index, closed.job_commitment)
        except (WorkerAPIError, TimeoutError, KeyError, ValueError) as exc:
            log.debug("closing session on %s: %s", slot.endpoint, exc)
        finally:
            await slot.client.aclose()

    async def open(self, route: list[RouteHop]) -> None:
        """Open a session on every hop of `route` (already recorded on chain), all at once; failing hops fail over."""
        indexes = [await self.job_hops.index_for(hop.address, hop.span, self.reason) for hop in route]
        opened = await asyncio.gather(
            *(
                self._open(hop.address, hop.endpoint, hop.span, i)
                for hop, i in zip(route, indexes, strict=True)
            ),
            return_exceptions=True,
        )
        for hop, slot in zip(route, opened, strict=True):
            if isinstance(slot, OpenSession):
                self.slots.append(slot)
            elif isinstance(slot, WorkerAPIError):
                if not is_busy(slot):
                    self.directory.mark_down(hop.address, str(slot))
                self.slots.extend(await self._replacement(hop.span, []))
            else:
                self.slots = []
                await asyncio.gather(*(self._close(s) for s in opened if isinstance(s, OpenSession)))
                raise slot

    async def close(self) -> None:
        """Close every session (each worker then commits to its steps)."""
        slots = self.slots + [s.shadow for s in self.slots if s.shadow] + self._extra
        self.slots, self._extra = [], []
        await asyncio.gather(*(self._close(s) for s in slots))

    # -- stepping
    def _codec(self, x: torch.Tensor) -> str | None:
        return None if not x.dtype.is_floating_point else self.ctx.codec

    async def _step(self, slot: OpenSession, x: torch.Tensor, pos: int) -> StepResult:
        t0 = time.perf_counter()
        res = await slot.client.step_full(slot.session_id, x, pos, self._codec(x))
        self.directory.record_step(slot.node, time.perf_counter() - t0, len(slot.span))
        return res

    def _record(self, slot: OpenSession, x: torch.Tensor, pos: int, res: StepResult, replay: bool) -> None:
        slot.history.append((pos, x))
        slot.last = res
        if slot.hop_index is None:
            return
        n = int(x.shape[1])
        self.job_hops.positions[slot.hop_index] += n
        input_hash = step_hash(encode_frame(x, self._codec(x) or "int64"))
        self.records.append(
            StepRecord(slot.hop_index, self.step_index, pos, n, input_hash, res.step_hash, replay)
        )

    async def forward(self, x: torch.Tensor, pos: int) -> torch.Tensor:
        """Run one step (token ids at positions pos…pos+n-1) through every hop; returns the last hop's logits."""
        i = 0
        while i < len(self.slots):
            slot = self.slots[i]
            try:
                res = await self._step(slot, x, pos)
            except WorkerAPIError as exc:
                await self._failover(i, exc)
                continue
            self._record(slot, x, pos, res, replay=False)
            if should_verify(
                self.ctx.verify_share,
                job_id=self.job_hops.job_id,
                hop_index=i,
                step_index=self.step_index,
                salt=self.ctx.salt,
            ):
                await self._verify(slot)
            x = res.tensor
            i += 1
        self.step_index += 1
        return x

    # -- failover
    async def _failover(self, i: int, exc: Exception) -> None:
        old = self.slots[i]
        t0 = time.perf_counter()
        log.warning(
            "job %d: step on %s (layers %s) failed: %s; failing over",
            self.job_hops.job_id,
            old.endpoint,
            old.span,
            exc,
        )
        self.directory.mark_down(old.node, str(exc))
        closing = asyncio.ensure_future(self._close(old))
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        if old.shadow is not None:
            self._extra.append(old.shadow)
        new = await self._replacement(old.span, old.history)
        self.slots[i : i + 1] = new
        self.failovers.append(
            {
                "dead": old.node,
                "span": str(old.span),
                "replacement": [s.node for s in new],
                "replayed_steps": len(old.history),
                "seconds": time.perf_counter() - t0,
            }
        )
        log.info(
            "job %d: layers %s now on %s after replaying %d steps in %.3f s",
            self.job_hops.job_id,
            old.span,
            ", ".join(s.endpoint for s in new),
            len(old.history),
            time.perf_counter() - t0,
        )

    async def _replacement(
        self, span: LayerSpan, history: list[tuple[int, torch.Tensor]]
    ) -> list[OpenSession]:
        """Open a chain of live workers covering `span` and replay `history` into it."""
        last_error: Exception | None = None
        for _ in range(self.ctx.max_failovers):
            route = self.ctx.router.cover(self.model_id, self.num_layers, span)
            opened: list[OpenSession] = []
            current = route[0].address
            try:
                for hop in route:
                    current = hop.address
                    index = await self.job_hops.index_for(hop.address, hop.span, "failover")
                    opened.append(await self._open(hop.address, hop.endpoint, hop.span, index))
                for pos, x in history:
                    y = x
                    for slot in opened:
                        current = slot.node
                        res = await self._step(slot, y, pos)
                        self._record(slot, y, pos, res, replay=True)
                        y = res.tensor
                return opened
            except WorkerAPIError as exc:
                last_error = exc
                if not is_busy(exc):
                    self.directory.mark_down(current, str(exc))
                await asyncio.gather(*(self._close(slot) for slot in opened))
        raise GenerationError(
            f"job {self.job_hops.job_id}: could not fail over layers {span} after {self.ctx.max_failovers} tries "
            f"(last error: {last_error}); start another worker for that span"
        )

    # -- verification
    async def _catch_up(self, shadow: OpenSession, target: OpenSession, upto: int) -> StepResult:
        """Feed the shadow session the target's inputs it has not seen, up to entry `upto` (inclusive)."""
        res: StepResult | None = None
        while shadow.fed <= upto:
            pos, x = target.history[shadow.fed]
            res = await self._step(shadow, x, pos)
            shadow.fed += 1
        assert res is not None
        return res

    async def _verify(self, slot: OpenSession) -> None:
        k = len(slot.history) - 1
        claimed = slot.last
        assert claimed is not None
        is_logits = slot.span.end == self.num_layers
        tol = self.ctx.tolerance
        if slot.shadow is None:
            replicas = self.ctx.router.replicas(self.model_id, slot.span, besides={slot.node})
            if not replicas:
                log.debug(
                    "job %d: no replica of layers %s to verify against", self.job_hops.job_id, slot.span
                )
                return
            try:
                slot.shadow = await self._open_once(
                    replicas[0].address, replicas[0].endpoint, slot.span, None
                )
            except WorkerAPIError as exc:  # a busy replica: verify another step
                if not is_busy(exc):
                    self.directory.mark_down(replicas[0].address, str(exc))
                return
        shadow = slot.shadow
        try:
            ref = await self._catch_up(shadow, slot, k)
        except WorkerAPIError as exc:
            self.directory.mark_down(shadow.node, str(exc))
            slot.shadow = None
            self._extra.append(shadow)
            return
        verdict = compare(claimed.tensor, ref.tensor, is_logits=is_logits, tol=tol)
        row = dict(
            job_id=self.job_hops.job_id,
            hop_index=slot.hop_index,
            step_index=self.step_index,
            node=slot.node,
            replica=shadow.node,
            metric=min(verdict.metric, 1e300),
            agree=verdict.agree,
        )
        if verdict.agree:
            self.ctx.state.add_verification(**row)
            return
        log.warning(
            "job %d: %s and %s disagree on layers %s step %d (%s %.3g); asking a referee",
            self.job_hops.job_id,
            slot.node,
            shadow.node,
            slot.span,
            self.step_index,
            verdict.kind,
            verdict.metric,
        )
        referees = self.ctx.router.replicas(self.model_id, slot.span, besides={slot.node, shadow.node})
        outlier: str | None = None
        referee_node: str | None = None
        for ref_worker in referees:
            try:
                referee = await self._open(ref_worker.address, ref_worker.endpoint, slot.span, None)
            except WorkerAPIError as exc:
                self.directory.mark_down(ref_worker.address, str(exc))
                continue
            self._extra.append(referee)
            try:
                judged = await self._catch_up(referee, slot, k)
            except WorkerAPIError as exc:
                self.directory.mark_down(ref_worker.address, str(exc))
                continue
            referee_node = referee.node
            side = pick_outlier(
                compare(claimed.tensor, judged.tensor, is_logits=is_logits, tol=tol),
                compare(ref.tensor, judged.tensor, is_logits=is_logits, tol=tol),
            )
            if side is not None:
                outlier = slot.node if side == "worker" else shadow.node
                await self._slash(
                    outlier, slot, k, claimed, shadow.node, ref, referee.node, judged, verdict.metric
                )
            break
        self.ctx.state.add_verification(**row, referee=referee_node, outlier=outlier)
        if outlier is None:
            log.warning(
                "job %d: no referee could settle the disagreement on layers %s; nobody slashed",
                self.job_hops.job_id,
                slot.span,
            )
            return
        if outlier == slot.node:
            raise CheatDetected(outlier)
        slot.shadow = None
        self._extra.append(shadow)

    async def _slash(
        self,
        node: str,
        slot: OpenSession,
        k: int,
        claimed: StepResult,
        replica: str,
        replica_res: StepResult,
        referee: str,
        referee_res: StepResult,
        metric: float,
    ) -> None:
        pos, x = slot.history[k]
        record = evidence_record(
            job_id=self.job_hops.job_id,
            node=node,
            hop_index=slot.hop_index or 0,
            step_index=self.step_index,
            span=(slot.span.start, slot.span.end),
            start_pos=pos,
            input_hash=step_hash(encode_frame(x, self._codec(x) or "int64")),
            claimed_hash=claimed.step_hash if node == slot.node else replica_res.step_hash,
            replica=replica if node == slot.node else slot.node,
            replica_hash=replica_res.step_hash if node == slot.node else claimed.step_hash,
            referee=referee,
            referee_hash=referee_res.step_hash,
            metric=min(metric, 1e300),
        )
        digest = evidence_hash(record)
        self.directory.exclude(node)  # routed around now, and left out of the job's settlement (never paid)
        # Protocol v2 slashes only on evidence the registry checks itself: the accused's signed commitment, a Merkle
        # proof of the wrong leaf, and Verdicts signed by verifiers the registry draws after the job closes. This
        # verifier has the first two but no way to gather drawn verifiers' verdicts, so the evidence is recorded
        # off chain (tx_hash None) and no slash is sent.
        self.ctx.state.add_slash(
            job_id=self.job_hops.job_id, node=node, evidence_hash=digest, evidence=record, tx_hash=None
        )
        log.warning(
            "job %d: caught %s sending wrong outputs (evidence 0x%s recorded off chain; not slashed on "
            "chain: no drawn verifiers' verdicts)",
            self.job_hops.job_id,
            node,
            digest.hex(),
        )
