"""Push mode, after the last token: what the coordinator did not relay, read back from the workers and checked.

Every middle worker keeps the frames it sent (`GET /v1/sessions/{id}/outputs`). At the end of a generation the
coordinator reads them once per session, checks each frame against the hash its sender stated in the step's
answer (`X-Hop-Hashes`: what the next hop hashed as its input and bound in its leaf), and from them builds:

- the step records (input and output hash of every hop's step, as relay mode records them);
- each hop's packages for the after-the-fact checks (`JobHops.relayed`: input frame, output hash, fingerprint),
  exactly what relay mode would have relayed, so the verifiers the registry draws judge push jobs the same way;
- the sampled shadow checks (`coordinator.verification_runs`), run here instead of during the step; a cheat they
  catch raises `CheatDetected` and the job runs again (tokens already streamed are corrected, as in relay mode).

A session whose kept frames do not match the hashes it stated, or that cannot hand them over, leaves the hop after
it unchecked (logged), as does a compact answer for the last hop's shadow check (its full logits never left).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from coordinator.disputes import input_frame
from coordinator.hop_sessions import OpenSession
from coordinator.state import StepRecord
from coordinator.verification_runs import verify_last_step
from coordinator.verifier import should_verify
from shardnet.peer.client import StepResult
from shardnet.verify.fingerprint import make_fingerprint
from shardnet.wire.commitment import step_hash
from shardnet.wire.frames import encode_frame

if TYPE_CHECKING:
    from coordinator.push_path import PushPipeline

log = logging.getLogger(__name__)

UNKNOWN_HASH = b"\x00" * 32  # in a record: the step's frame was never read back (the generation failed)


@dataclass(eq=False)
class PushedStep:
    """One step a session computed in push mode."""

    step_index: int
    pos: int
    n: int
    source: OpenSession | None  # whose output was this step's input (None: the coordinator's token ids)
    source_at: int  # that output's index among the source's steps (or in the pipeline's `ids`)
    output_hash: (
        bytes | None
    )  # as the step's answer stated it; None: done before a failed hop (read back later)
    replay: bool
    fingerprint: asyncio.Future[bytes] | None = (
        None  # the last hop's: of its logits, or stated by a compact answer
    )
    output: torch.Tensor | None = (
        None  # the last hop's logits, kept only for a step sampled for a shadow check
    )


async def _sent_frames(pipe: PushPipeline) -> dict[OpenSession, list[tuple[torch.Tensor, bytes]]]:
    """Each live middle session's sent outputs per step (tensor, frame), checked against the stated hashes."""
    middles = [s for s in pipe.slots if s in pipe.done and s.span.end != pipe.num_layers]
    fetched = await asyncio.gather(*(s.client.outputs(s.session_id) for s in middles), return_exceptions=True)
    sent: dict[OpenSession, list[tuple[torch.Tensor, bytes]]] = {}
    for slot, out in zip(middles, fetched, strict=True):
        if isinstance(out, BaseException):
            log.warning("job %d: %s kept no outputs to read (%s): its next hop is not checked after the fact",
                        pipe.job_hops.job_id, slot.endpoint, out)  # fmt: skip
            continue
        pieces, offset, hashes = [], 0, []
        for step in pipe.done[slot]:
            piece = out[:, offset : offset + step.n].clone()
            offset += step.n
            frame = encode_frame(piece, pipe.ctx.codec)
            hashes.append(step_hash(frame))
            pieces.append((piece, frame))
        stated = [s.output_hash for s in pipe.done[slot]]
        if offset != int(out.shape[1]) or any(
            h is not None and h != c for h, c in zip(stated, hashes, strict=True)
        ):
            log.warning("job %d: %s kept outputs that are not the frames it stated: its next hop is not checked "
                        "after the fact", pipe.job_hops.job_id, slot.endpoint)  # fmt: skip
            continue
        for step, h in zip(pipe.done[slot], hashes, strict=True):
            step.output_hash = h
        sent[slot] = pieces
    return sent


def _inputs(
    pipe: PushPipeline, steps: list[PushedStep], sent: dict[OpenSession, list[tuple[torch.Tensor, bytes]]]
) -> list[tuple[torch.Tensor, bytes]] | None:
    """A session's inputs per step (tensor, frame as received), or None when one of them cannot be read back."""
    inputs = []
    for step in steps:
        if step.source is None:
            x = pipe.ids[step.source_at][1]
            inputs.append((x, input_frame(x, pipe.codec_of(x))))
        elif step.source in sent:
            inputs.append(sent[step.source][step.source_at])
        else:
            return None
    return inputs


def known_records(pipe: PushPipeline) -> list[StepRecord]:
    """Step records from what the answers stated (an input read back nowhere: its source's stated hash)."""
    records = []
    for slot, steps in pipe.done.items():
        if slot.hop_index is None:
            continue
        for step in steps:
            source = pipe.done[step.source][step.source_at].output_hash if step.source is not None else None
            if step.source is None:
                x = pipe.ids[step.source_at][1]
                source = step_hash(input_frame(x, pipe.codec_of(x)))
            records.append(
                StepRecord(
                    slot.hop_index,
                    step.step_index,
                    step.pos,
                    step.n,
                    source or UNKNOWN_HASH,
                    step.output_hash or UNKNOWN_HASH,
                    step.replay,
                )  # fmt: skip
            )
    return records


async def finish_pushed(pipe: PushPipeline) -> None:
    """Records, the after-the-fact checks' packages and the sampled shadow checks of a finished generation."""
    sent = await _sent_frames(pipe)
    pipe.records = known_records(pipe)
    job_hops, pool = pipe.job_hops, pipe.ctx.fingerprint_pool
    loop = asyncio.get_running_loop()
    checked: dict[OpenSession, list[tuple[torch.Tensor, bytes]]] = {}
    for slot, steps in pipe.done.items():
        inputs = _inputs(pipe, steps, sent)
        if slot.hop_index is None or inputs is None or any(s.output_hash is None for s in steps):
            continue
        is_last = slot.span.end == pipe.num_layers
        if not is_last and slot not in sent:
            continue
        work = []
        for i, ((_, frame), step) in enumerate(zip(inputs, steps, strict=True)):
            fingerprint = step.fingerprint
            if not is_last:
                fingerprint = loop.run_in_executor(pool, make_fingerprint, sent[slot][i][0])
            assert fingerprint is not None and step.output_hash is not None
            work.append((frame, step.output_hash, fingerprint))
        job_hops.relayed.setdefault(slot.hop_index, []).extend(work)
        log.info("job %d: hop %d: %d steps read back for the after-the-fact check",
                 job_hops.job_id, slot.hop_index, len(work))  # fmt: skip
        checked[slot] = inputs
    await _shadow_checks(pipe, sent, checked)


async def _shadow_checks(
    pipe: PushPipeline,
    sent: dict[OpenSession, list[tuple[torch.Tensor, bytes]]],
    inputs_of: dict[OpenSession, list[tuple[torch.Tensor, bytes]]],
) -> None:
    """The (hop, step) pairs relay mode would have shadow-checked, checked now over the read-back frames."""
    share = pipe.ctx.verify_share
    if share <= 0:
        return
    for position, slot in enumerate(list(pipe.slots)):
        steps, inputs = pipe.done.get(slot, []), inputs_of.get(slot)
        if inputs is None:
            continue
        for k, step in enumerate(steps):
            if step.replay or not should_verify(
                share,
                job_id=pipe.job_hops.job_id,
                hop_index=position,
                step_index=step.step_index,
                salt=pipe.ctx.salt,
            ):
                continue
            output = step.output if slot.span.end == pipe.num_layers else sent[slot][k][0]
            if (
                output is None or step.output_hash is None
            ):  # a compact answer: its logits never left the worker
                continue
            slot.history = [(s.pos, x) for s, (x, _) in zip(steps[: k + 1], inputs[: k + 1], strict=True)]
            slot.last = StepResult(output, step.output_hash, k, [step.output_hash])
            finished, pipe.step_index = (
                pipe.step_index,
                step.step_index,
            )  # the step the check is recorded under
            try:
                await verify_last_step(pipe, slot)
            finally:
                pipe.step_index = finished


def keeps_output(pipe: PushPipeline, position: int) -> bool:
    """Whether the last hop's logits of the current step are kept for a shadow check later."""
    share = pipe.ctx.verify_share
    return share > 0 and should_verify(
        share, job_id=pipe.job_hops.job_id, hop_index=position, step_index=pipe.step_index, salt=pipe.ctx.salt
    )
