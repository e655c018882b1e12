"""After-the-fact check of one hop of a job: one prefill-style pass over the whole sequence it received.

The hop received its inputs step by step (step 0: the prompt's positions, then one position a step) and
committed one fingerprint per step. The verifier concatenates the inputs, runs the span's layers once
over all positions (a fresh KV cache, causal masks: the same function as the step-by-step run, up to
numerical drift), and compares every committed step with its slice of the result:

- a hidden-state hop: the fingerprint of all the step's positions;
- the last hop (logits of the step's last position): the logits' fingerprint, and the token the job
  emitted at that step: the argmax within a tie margin (greedy) or the job's seeded draw (sampled).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from shardnet.model.adapters import DecoderAdapter, ModelError
from shardnet.model.block import Block
from shardnet.model.device import to_cpu, to_device
from shardnet.verify.fingerprint import (
    FingerprintError,
    fingerprint_distance,
    make_fingerprint,
    parse_fingerprint,
)
from shardnet.verify.sampler import check_greedy, check_sampled
from shardnet.verify.tolerance import Tolerance


@dataclass(frozen=True)
class Sampling:
    """How a job's tokens were drawn: greedy (temperature 0) or from its seed at `temperature`."""

    seed: bytes | None = None  # None: greedy
    temperature: float = 1.0


GREEDY = Sampling()


@dataclass(frozen=True)
class StepResult:
    """The check of one committed step."""

    step: int
    positions: int
    distance: float  # fingerprint distance from the recomputation (inf: malformed or non-finite)
    bound: bool | None  # the fingerprint is exactly that of the output the hop sent (None: not given)
    token_ok: bool | None  # last hop only
    token_margin: (
        float | None
    )  # greedy: reference top logit minus the token's; sampled: draw outside interval
    passed: bool


@dataclass(frozen=True)
class Verdict:
    """The outcome of checking one hop of one job: passed only if every step passed and the median
    step distance is within the job tolerance (a cheat on every step shows in the median even where
    each step alone stays under the per-step tolerance of a low-precision dtype)."""

    passed: bool
    steps: list[StepResult] = field(repr=False)
    positions_recomputed: int
    median_distance: float

    @property
    def failed_steps(self) -> list[int]:
        return [s.step for s in self.steps if not s.passed]

    @property
    def max_distance(self) -> float:
        return max((s.distance for s in self.steps), default=0.0)


def recompute_span(
    block: Block, step_inputs: Sequence[torch.Tensor], *, step_ends: bool = False
) -> torch.Tensor:
    """Run the span once over the concatenated inputs; returns [n, hidden] or, on the last hop,
    float32 logits of every position [n, vocab] (on the CPU, computed on the block's device).
    `step_ends`: on the last hop, the logits of each step's last position only [steps, vocab]: the only
    rows a last hop commits to, so the head (norm + vocabulary projection, on a small model as dear as
    its layers) skips the prompt's other positions."""
    adapter = block.adapter
    if not isinstance(adapter, DecoderAdapter):
        raise ModelError(f"checking by prefill needs a decoder block, got a {block.kind} block")
    if not step_inputs:
        raise ModelError("no steps to check: pass the inputs the hop received, one tensor per step")
    for x in step_inputs:
        block.check_input(x)
    x_all = torch.cat(list(step_inputs), dim=1)
    n = int(x_all.shape[1])
    limit = getattr(block.config, "max_position_embeddings", None)
    if limit is not None and n > limit:
        raise ModelError(f"the job has {n} positions, more than the model's {limit}")
    with torch.inference_mode():
        cache = adapter.new_cache(block.config)
        position_ids = torch.arange(n, device=block.device).unsqueeze(0)
        x_all = to_device(x_all, block.device)
        hidden = adapter.embed(block.module, x_all, position_ids) if block.is_first else x_all.to(block.dtype)
        hidden = adapter.run_layers(block.module, hidden, block.span, cache, position_ids)
        if block.is_last:
            if step_ends:
                ends = list(itertools.accumulate(int(x.shape[1]) for x in step_inputs))
                hidden = hidden[:, [e - 1 for e in ends]]
            # positions as a batch of one-position rows: the adapter's head takes each row's last position
            return to_cpu(adapter.logits(block.module, hidden.transpose(0, 1)).float()[:, 0, :])
        return to_cpu(hidden[0])


def check_hop(
    block: Block,
    step_inputs: Sequence[torch.Tensor],
    fingerprints: Sequence[bytes],
    tolerance: Tolerance,
    *,
    tokens: Sequence[int] | None = None,
    sampling: Sampling = GREEDY,
    sent: Sequence[torch.Tensor] | None = None,
    reference: torch.Tensor | None = None,
    check_tokens: bool = True,
) -> Verdict:
    """Check every committed step of one hop at once.

    `step_inputs[i]` is what the hop received at step i ([1, n_i] ids on the first hop, [1, n_i, hidden]
    otherwise), `fingerprints[i]` what it committed. On the last hop `tokens[i]` is the token the job
    emitted after step i. `sent[i]`, the output the hop sent at step i (what the next hop received, as
    decoded from the frame whose hash is in the leaf), if given, must have exactly the committed
    fingerprint: a hop cannot commit the honest fingerprint and send something else.
    `reference` (from `recompute_span`, with or without `step_ends`) may be passed to reuse one recomputation. `check_tokens=False`
    checks a last hop on its committed logits only (a dispute over a worker's leaves: the token is the
    coordinator's pick, not the worker's work).
    """
    if sent is not None and len(sent) != len(step_inputs):
        raise ValueError(f"{len(step_inputs)} steps of inputs but {len(sent)} sent outputs")
    if len(fingerprints) != len(step_inputs):
        raise ValueError(f"{len(step_inputs)} steps of inputs but {len(fingerprints)} fingerprints")
    check_tokens = check_tokens and block.is_last
    if check_tokens and (tokens is None or len(tokens) != len(step_inputs)):
        raise ValueError("the last hop is checked on its tokens: pass one emitted token per step")
    ref = recompute_span(block, step_inputs, step_ends=True) if reference is None else reference
    per_step = block.is_last and int(ref.shape[0]) == len(step_inputs)  # one row a step (`step_ends`)
    results: list[StepResult] = []
    offset = 0
    for i, (x, fp) in enumerate(zip(step_inputs, fingerprints, strict=True)):
        n = int(x.shape[1])
        if block.is_last:
            rows = ref[i : i + 1] if per_step else ref[offset + n - 1 : offset + n]
        else:
            rows = ref[offset : offset + n]
        offset += n
        dist = fingerprint_distance(fp, rows)
        ok = dist <= tolerance.distance
        bound: bool | None = None
        if sent is not None:
            try:
                bound = make_fingerprint(sent[i], *_shape(fp)) == bytes(fp)
            except FingerprintError:
                bound = False
            ok = ok and bound
        token_ok: bool | None = None
        margin: float | None = None
        if check_tokens:
            assert tokens is not None
            if sampling.seed is None:
                tc = check_greedy(tokens[i], rows[0], tolerance.tie_margin)
            else:
                tc = check_sampled(
                    tokens[i], rows[0], sampling.seed, i, sampling.temperature, tolerance.cdf_margin
                )
            token_ok, margin = tc.ok, tc.margin
            ok = ok and tc.ok
        results.append(StepResult(i, n, dist, bound, token_ok, margin, ok and not math.isnan(dist)))
    median = statistics.median(r.distance for r in results)
    passed = all(r.passed for r in results) and median <= tolerance.job_median
    return Verdict(passed, results, offset, median)


def _shape(fingerprint: bytes) -> tuple[int, int]:
    """(k, projections) of committed fingerprint bytes, to recompute a fingerprint the same way."""
    parsed = parse_fingerprint(fingerprint)
    return int(parsed.indices.shape[1]), int(parsed.projections.shape[1])
