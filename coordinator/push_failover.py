"""Push mode's failover: a failed worker's inputs read back from the worker before it, replayed into a
replacement chain (docs/PROTOCOL.md "Data path")."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import torch

from coordinator.directory import is_busy
from coordinator.hop_sessions import GenerationError, OpenSession, open_session
from coordinator.push_checks import PushedStep, keeps_output
from coordinator.router import NoRouteError
from shardnet.peer.client import StepResult
from shardnet.peer.errors import WorkerAPIError
from shardnet.span import LayerSpan

if TYPE_CHECKING:
    from coordinator.push_path import PushPipeline

Input = tuple[
    int, torch.Tensor, OpenSession | None, int
]  # (pos, input, its source session or None, index there)


def link(slot: OpenSession) -> dict[str, str]:
    """`next` for the session before `slot`: where to forward its outputs."""
    return {
        "url": slot.endpoint.rstrip("/"),
        "session_id": slot.session_id,
        "token": slot.client.session_token(slot.session_id),
    }


async def inputs_of(pipe: PushPipeline, k: int) -> list[tuple[int, torch.Tensor, OpenSession | None, int]]:
    """Chain position k's inputs so far, this step's included: (pos, input, source, index at the source)."""
    if k == 0:
        return [(pos, x, None, i) for i, (pos, x) in enumerate(pipe.ids)]
    prev = pipe.slots[k - 1]
    try:
        outputs = await prev.client.outputs(prev.session_id)
    except WorkerAPIError as exc:
        raise GenerationError(
            f"job {pipe.job_hops.job_id}: {prev.endpoint} (layers {prev.span}) cannot hand over the outputs "
            f"its failed next hop needs for a replay ({exc})"
        ) from exc
    history: list[tuple[int, torch.Tensor, OpenSession | None, int]] = []
    offset = 0
    for i, step in enumerate(pipe.done.get(prev, [])):
        history.append((step.pos, outputs[:, offset : offset + step.n].clone(), prev, i))
        offset += step.n
    return history


async def replacement_chain(
    pipe: PushPipeline,
    span: LayerSpan,
    history: list[tuple[int, torch.Tensor, OpenSession | None, int]],
    nxt: dict[str, str] | None,
    avoid: set[str],
) -> tuple[list[OpenSession], StepResult | None]:
    """Open a chain over `span` linked to `nxt`, and replay `history` into it (answered, not forwarded).
    Returns the chain and its last session's answer to the last entry (the failed step)."""
    last_error: Exception | None = None
    avoid = {a.lower() for a in avoid}
    for _ in range(pipe.ctx.max_failovers):
        try:
            route = pipe.ctx.router.cover(pipe.model_id, pipe.num_layers, span, exclude=avoid)
        except NoRouteError:
            if not avoid:
                raise
            route = pipe.ctx.router.cover(pipe.model_id, pipe.num_layers, span)
        opened: list[OpenSession] = []
        current = route[-1].address
        try:
            for hop in reversed(route):
                current = hop.address
                index = await pipe.job_hops.index_for(hop.address, hop.span, "failover")
                slot = await open_session(
                    pipe.ctx, pipe.job_hops, hop.address, hop.endpoint, hop.span, index,
                    next_hop=link(opened[0]) if opened else nxt, answer=pipe.answer_kind(hop.span), answer_to=pipe.answer_url(hop.span),
                )  # fmt: skip
                opened.insert(0, slot)
            res: StepResult | None = None
            for n_done, (pos, x, source, source_at) in enumerate(history):
                y, src, at = x, source, source_at
                for slot in opened:
                    current = slot.node
                    res = await slot.client.step_full(
                        slot.session_id, y, pos, pipe.codec_of(y), forward=False
                    )
                    replay = n_done < len(history) - 1
                    step = PushedStep(n_done, pos, int(x.shape[1]), src, at, res.step_hash, replay)
                    if slot.span.end == pipe.num_layers:
                        step.fingerprint = pipe.fingerprint(res)
                        keep = not res.top_k and not replay and keeps_output(pipe, len(pipe.slots) - 1)
                        step.output = res.tensor if keep else None
                    slot.last = res
                    src, at = slot, pipe.note(slot, step)
                    y = res.tensor
            return opened, res
        except WorkerAPIError as exc:
            last_error = exc
            (pipe.directory.mark_busy if is_busy(exc) else pipe.directory.mark_down)(current, str(exc))
            if is_busy(exc):
                avoid.add(current.lower())
            await asyncio.gather(*(pipe.close_one(slot) for slot in opened))
    raise GenerationError(
        f"job {pipe.job_hops.job_id}: could not fail over layers {span} after {pipe.ctx.max_failovers} tries "
        f"(last error: {last_error}); start another worker for that span"
    )
