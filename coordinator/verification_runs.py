"""Verification runs of sampled steps: shadow sessions on a replica, referees on disagreement, and the evidence.

For a sampled (hop, step), a replica of the same span runs the hop's inputs up to that step in a "shadow"
session (kept open, so each input is computed once) and the outputs are compared within a tolerance
(`coordinator.verifier`). On disagreement a third worker referees from scratch; the outlier is excluded from
routing and its evidence recorded (not slashed on chain: protocol v2 needs verdicts of verifiers the registry
draws), and, if it was the routed worker, `CheatDetected` tells the caller to run the job again on honest
workers (the cheat's hop is left out of the settlement).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from coordinator.directory import is_busy
from coordinator.hop_sessions import OpenSession, open_session, open_session_once
from coordinator.verifier import compare, evidence_hash, evidence_record, pick_outlier
from shardnet.errors import ShardnetError
from shardnet.peer.client import StepResult
from shardnet.peer.errors import WorkerAPIError
from shardnet.wire.commitment import step_hash
from shardnet.wire.frames import encode_frame

if TYPE_CHECKING:
    from coordinator.pipeline import Pipeline

log = logging.getLogger(__name__)


class CheatDetected(ShardnetError):
    """A routed worker was proven wrong by a referee (and excluded): run the job again without it."""

    def __init__(self, node: str) -> None:
        super().__init__(
            f"worker {node} was caught sending wrong outputs (evidence recorded); re-running on honest workers"
        )
        self.node = node


async def catch_up(pipeline: Pipeline, shadow: OpenSession, target: OpenSession, upto: int) -> StepResult:
    """Feed the shadow session the target's inputs it has not seen, up to entry `upto` (inclusive)."""
    res: StepResult | None = None
    while shadow.fed <= upto:
        pos, x = target.history[shadow.fed]
        res = await pipeline.step_session(shadow, x, pos)
        shadow.fed += 1
    assert res is not None
    return res


async def verify_last_step(pipeline: Pipeline, slot: OpenSession) -> None:
    """Check `slot`'s last output against a replica's shadow session; on disagreement ask a referee.

    Raises `CheatDetected` when the referee names the routed worker the outlier."""
    ctx, job_id = pipeline.ctx, pipeline.job_hops.job_id
    k = len(slot.history) - 1
    claimed = slot.last
    assert claimed is not None
    is_logits = slot.span.end == pipeline.num_layers
    tol = ctx.tolerance
    if slot.shadow is None:
        replicas = ctx.router.replicas(pipeline.model_id, slot.span, besides={slot.node})
        if not replicas:
            log.debug("job %d: no replica of layers %s to verify against", job_id, slot.span)
            return
        try:
            slot.shadow = await open_session_once(
                ctx, pipeline.job_hops, replicas[0].address, replicas[0].endpoint, slot.span, None
            )
        except WorkerAPIError as exc:  # a busy replica: verify another step
            if not is_busy(exc):
                pipeline.directory.mark_down(replicas[0].address, str(exc))
            return
    shadow = slot.shadow
    try:
        ref = await catch_up(pipeline, shadow, slot, k)
    except WorkerAPIError as exc:
        pipeline.directory.mark_down(shadow.node, str(exc))
        slot.shadow = None
        pipeline.to_close.append(shadow)
        return
    verdict = compare(claimed.tensor, ref.tensor, is_logits=is_logits, tol=tol)
    row = dict(
        job_id=job_id,
        hop_index=slot.hop_index,
        step_index=pipeline.step_index,
        node=slot.node,
        replica=shadow.node,
        metric=min(verdict.metric, 1e300),
        agree=verdict.agree,
    )
    if verdict.agree:
        ctx.state.add_verification(**row)
        return
    log.warning(
        "job %d: %s and %s disagree on layers %s step %d (%s %.3g); asking a referee",
        job_id,
        slot.node,
        shadow.node,
        slot.span,
        pipeline.step_index,
        verdict.kind,
        verdict.metric,
    )
    referees = ctx.router.replicas(pipeline.model_id, slot.span, besides={slot.node, shadow.node})
    outlier: str | None = None
    referee_node: str | None = None
    for ref_worker in referees:
        try:
            referee = await open_session(
                ctx, pipeline.job_hops, ref_worker.address, ref_worker.endpoint, slot.span, None
            )
        except WorkerAPIError as exc:
            pipeline.directory.mark_down(ref_worker.address, str(exc))
            continue
        pipeline.to_close.append(referee)
        try:
            judged = await catch_up(pipeline, referee, slot, k)
        except WorkerAPIError as exc:
            pipeline.directory.mark_down(ref_worker.address, str(exc))
            continue
        referee_node = referee.node
        side = pick_outlier(
            compare(claimed.tensor, judged.tensor, is_logits=is_logits, tol=tol),
            compare(ref.tensor, judged.tensor, is_logits=is_logits, tol=tol),
        )
        if side is not None:
            outlier = slot.node if side == "worker" else shadow.node
            record_cheat(
                pipeline, outlier, slot, k, claimed, shadow.node, ref, referee.node, judged, verdict.metric
            )
        break
    ctx.state.add_verification(**row, referee=referee_node, outlier=outlier)
    if outlier is None:
        log.warning(
            "job %d: no referee could settle the disagreement on layers %s; nobody slashed", job_id, slot.span
        )
        return
    if outlier == slot.node:
        raise CheatDetected(outlier)
    slot.shadow = None
    pipeline.to_close.append(shadow)


def record_cheat(
    pipeline: Pipeline,
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
    """Exclude the outlier `node` from routing and record the evidence against it (off chain)."""
    pos, x = slot.history[k]
    record = evidence_record(
        job_id=pipeline.job_hops.job_id,
        node=node,
        hop_index=slot.hop_index or 0,
        step_index=pipeline.step_index,
        span=(slot.span.start, slot.span.end),
        start_pos=pos,
        input_hash=step_hash(encode_frame(x, pipeline.codec_of(x) or "int64")),
        claimed_hash=claimed.step_hash if node == slot.node else replica_res.step_hash,
        replica=replica if node == slot.node else slot.node,
        replica_hash=replica_res.step_hash if node == slot.node else claimed.step_hash,
        referee=referee,
        referee_hash=referee_res.step_hash,
        metric=min(metric, 1e300),
    )
    digest = evidence_hash(record)
    pipeline.directory.exclude(node)  # routed around now, and left out of the job's settlement (never paid)
    # Protocol v2 slashes only on evidence the registry checks itself: the accused's signed commitment, a Merkle
    # proof of the wrong leaf, and Verdicts signed by verifiers the registry draws after the job closes. This
    # verifier has the first two but no way to gather drawn verifiers' verdicts, so the evidence is recorded
    # off chain (tx_hash None) and no slash is sent.
    pipeline.ctx.state.add_slash(
        job_id=pipeline.job_hops.job_id, node=node, evidence_hash=digest, evidence=record, tx_hash=None
    )
    log.warning(
        "job %d: caught %s sending wrong outputs (evidence 0x%s recorded off chain; not slashed on "
        "chain: no drawn verifiers' verdicts)",
        pipeline.job_hops.job_id,
        node,
        digest.hex(),
    )
