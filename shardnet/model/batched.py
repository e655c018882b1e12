"""Decode steps of many sessions of one decoder block run as one batched forward (docs/batching.md).

Each session keeps its own KV cache (a DynamicCache, as for one sequence). For a batch, the caches of
the span's layers are gathered into one padded cache, left-padded with zeros to the longest session,
with a 2D attention mask that hides the padding; every row gets its own position. After the forward,
the one new key/value column of each row is appended to its session's own cache (`BlockSession.extend`),
so a session leaves a batch exactly as it would leave a step of its own, bar the last bits of floats
that the batched matrix products may round differently.

Decode steps batch: one new position on a session that has cached at least one, on full-attention layers
(sliding-window caches keep a window, not every position). So do short prefills: the first step of fresh
sessions (at most `PREFILL_MAX_POSITIONS` positions each) run as one forward, right-padded to the longest
(a causal layer never lets a position see the padding after it), grouped by length so that the padding stays
under a quarter of the prompts' positions (or 32 positions) and at most `PREFILL_BATCH_POSITIONS` positions run
at once (`prefill_batch`).
A lone step, a long prefill, a step that continues a session with several positions, or a batch whose
forward raises runs through `BlockSession.step`, the exact single-sequence path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from transformers.cache_utils import DynamicLayer

from shardnet.model.adapters import DecoderAdapter, ModelError
from shardnet.model.device import to_cpu, to_device

if TYPE_CHECKING:
    from transformers.cache_utils import Cache

    from shardnet.model.block import Block
    from shardnet.model.session import BlockSession

logger = logging.getLogger(__name__)

StepResult = torch.Tensor | Exception

PREFILL_MAX_POSITIONS = 256  # a longer prompt is prefilled alone: it fills a forward by itself
PREFILL_BATCH_POSITIONS = 1024  # most positions (padding included) of one batched prefill
#: a batched prefill's positions, padding included, are at most PREFILL_PADDING times its prompts', or its padding
#: at most PREFILL_SLACK positions (short prompts batch whatever their lengths)
PREFILL_PADDING = 1.25
PREFILL_SLACK = 32


def step_many(
    sessions: Sequence[BlockSession], inputs: Sequence[torch.Tensor], start_positions: Sequence[int]
) -> list[StepResult]:
    """Run one step of each session (`session.step(x, start_pos)`), batching the decode steps.

    Returns, per session in order, its output or the exception its step raised: one session's bad
    input or state fails that session alone. With one session this is exactly `session.step`.
    """
    if not len(sessions) == len(inputs) == len(start_positions):
        raise ValueError("step_many takes one input and one start position per session")
    results: list[StepResult | None] = [None] * len(sessions)
    batchable: list[int] = []
    fresh: list[int] = []
    alone: list[int] = []
    seen: set[int] = set()  # a session given twice: its later steps run alone, after, as one after the other
    for i, (session, x, pos) in enumerate(zip(sessions, inputs, start_positions, strict=True)):
        try:
            session.check_step(x, pos)
        except ModelError as exc:
            results[i] = exc
            continue
        if id(session) in seen:
            alone.append(i)
        elif len(sessions) > 1 and can_batch(session, x):
            batchable.append(i)
        elif len(sessions) > 1 and can_prefill_together(session, x):
            fresh.append(i)
        else:
            alone.append(i)
        seen.add(id(session))
    groups = ([batchable] if batchable else []) + prefill_groups(
        fresh, [int(inputs[i].shape[1]) for i in fresh]
    )
    for group in groups:
        if len(group) == 1 or len({id(sessions[i].block) for i in group}) > 1:
            alone += group
            continue
        run = decode_batch if group is batchable else prefill_batch
        try:
            outputs = run([sessions[i] for i in group], [inputs[i] for i in group])
        except Exception:  # nothing was written to the sessions' caches: run each alone instead
            logger.exception("a batched step of %d sessions failed; running them one by one", len(group))
            alone += group
        else:
            for i, out in zip(group, outputs, strict=True):
                results[i] = out
    for i in sorted(alone):
        try:
            results[i] = sessions[i].step(inputs[i], start_positions[i])
        except Exception as exc:
            results[i] = exc
    return [r if r is not None else ModelError("step not run") for r in results]


def can_batch(session: BlockSession, x: torch.Tensor) -> bool:
    """Whether this (checked) step may join a batched decode: one new position after at least one,
    every span layer's cache a plain full-attention DynamicLayer."""
    return int(x.shape[1]) == 1 and session.length >= 1 and _plain_layers_hold(session)


def can_prefill_together(session: BlockSession, x: torch.Tensor) -> bool:
    """Whether this (checked) step may join a batched prefill: the first step of a fresh session, at most
    `PREFILL_MAX_POSITIONS` positions, every span layer's cache a plain full-attention DynamicLayer."""
    return (
        session.length == 0 and 1 <= int(x.shape[1]) <= PREFILL_MAX_POSITIONS and _plain_layers_hold(session)
    )


def _plain_layers_hold(session: BlockSession) -> bool:
    """Whether every span layer of the session's cache is a plain full-attention DynamicLayer holding exactly
    the session's positions (sliding-window layers keep a window, not every position: they never batch)."""
    cache = session.cache
    span = session.block.span
    layers = getattr(cache, "layers", None)
    if cache is None or layers is None or len(layers) < span.end:
        return False
    return all(
        type(layers[i]) is DynamicLayer and layers[i].get_seq_length() == session.length
        for i in range(span.start, span.end)
    )


def prefill_groups(indices: Sequence[int], lengths: Sequence[int]) -> list[list[int]]:
    """`indices` (prompts of `lengths`) in groups of similar length that prefill together: by length, each group
    at most `PREFILL_BATCH_POSITIONS` positions padded to its longest, padded to at most `PREFILL_PADDING`
    times its prompts' positions or by at most `PREFILL_SLACK` positions (a group of one runs alone)."""
    groups: list[list[int]] = []
    group: list[int] = []
    real = 0
    for i, n in sorted(zip(indices, lengths, strict=True), key=lambda p: p[1]):
        padded = (len(group) + 1) * n  # sorted: n is the longest so far
        too_padded = padded > PREFILL_PADDING * (real + n) and padded - (real + n) > PREFILL_SLACK
        if group and (padded > PREFILL_BATCH_POSITIONS or too_padded):
            groups.append(group)
            group, real = [], 0
        group.append(i)
        real += n
    if group:
        groups.append(group)
    return groups


def prefill_batch(sessions: Sequence[BlockSession], inputs: Sequence[torch.Tensor]) -> list[StepResult]:
    """One forward of fresh sessions' prompts (each `can_prefill_together`, all of one block), right-padded to the
    longest; returns each output as its own step would ([1, n, hidden] hidden states, or the [1, 1, vocab]
    float32 logits of its last position on the last block) and leaves each session's cache holding its own
    positions only."""
    block: Block = sessions[0].block
    adapter = block.adapter
    if not isinstance(adapter, DecoderAdapter):
        raise ModelError(f"a {block.kind} block has no KV-cache sessions")
    lengths = [int(x.shape[1]) for x in inputs]
    longest = max(lengths)
    count = len(sessions)
    with torch.inference_mode():
        cache = adapter.new_cache(block.config)
        position_ids = to_device(torch.arange(longest).unsqueeze(0).expand(count, -1), block.device)
        if block.is_first:
            ids = inputs[0].new_zeros(count, longest)  # padding: token 0, after each prompt (never seen)
            for row, x in enumerate(inputs):
                ids[row, : lengths[row]] = x[0]
            hidden = adapter.embed(block.module, to_device(ids, block.device), position_ids)
        else:
            hidden = torch.zeros(count, longest, int(inputs[0].shape[-1]), dtype=block.dtype)
            for row, x in enumerate(inputs):
                hidden[row, : lengths[row]] = x[0].to(block.dtype)
            hidden = to_device(hidden, block.device)
        hidden = adapter.run_layers(block.module, hidden, block.span, cache, position_ids)
        if block.is_last:
            last = torch.stack([hidden[row, n - 1] for row, n in enumerate(lengths)]).unsqueeze(1)
            logits = to_cpu(adapter.logits(block.module, last).float())
            outputs = [logits[row : row + 1] for row in range(count)]
        else:
            out = to_cpu(hidden)
            outputs = [out[row : row + 1, :n] for row, n in enumerate(lengths)]
        outputs = [o.contiguous() for o in outputs]
        layers = [_dynamic_layer(cache, i) for i in range(block.span.start, block.span.end)]
        columns = []
        for row, n in enumerate(lengths):
            keys, values = [], []
            for layer in layers:
                assert layer.keys is not None and layer.values is not None
                keys.append(layer.keys[row : row + 1, :, :n, :])
                values.append(layer.values[row : row + 1, :, :n, :])
            columns.append((keys, values))
        return _scatter(sessions, columns, outputs)


def decode_batch(sessions: Sequence[BlockSession], inputs: Sequence[torch.Tensor]) -> list[StepResult]:
    """One forward of `sessions`' decode steps (each `can_batch`, all of one block); returns each output
    ([1, 1, hidden] hidden states, or [1, 1, vocab] float32 logits on the last block; on the CPU, the padded
    cache, mask and forward on the block's device)."""
    block: Block = sessions[0].block
    adapter = block.adapter
    if not isinstance(adapter, DecoderAdapter):
        raise ModelError(f"a {block.kind} block has no KV-cache sessions")
    lengths = [s.length for s in sessions]
    longest = max(lengths)
    count = len(sessions)
    with torch.inference_mode():
        padded = adapter.new_cache(block.config)
        for layer_idx in range(block.span.start, block.span.end):
            keys, values = _gather(sessions, layer_idx, longest)
            layer = _dynamic_layer(padded, layer_idx)
            layer.lazy_initialization(keys, values)
            layer.keys, layer.values = keys, values
        mask = torch.zeros(count, longest + 1, dtype=torch.long)
        for row, length in enumerate(lengths):
            mask[row, longest - length :] = 1
        mask = to_device(mask, block.device)
        position_ids = to_device(torch.tensor(lengths, dtype=torch.long).unsqueeze(1), block.device)
        x = to_device(torch.cat(list(inputs), dim=0), block.device)
        hidden = adapter.embed(block.module, x, position_ids) if block.is_first else x.to(block.dtype)
        hidden = adapter.run_layers(block.module, hidden, block.span, padded, position_ids, mask)
        out = adapter.logits(block.module, hidden).float() if block.is_last else hidden
        out = to_cpu(out)
        new_columns = [
            _last_column(_dynamic_layer(padded, i)) for i in range(block.span.start, block.span.end)
        ]
        columns = [
            ([k[row : row + 1] for k, _ in new_columns], [v[row : row + 1] for _, v in new_columns])
            for row in range(count)
        ]
        return _scatter(sessions, columns, [out[row : row + 1] for row in range(count)])


def _scatter(
    sessions: Sequence[BlockSession],
    columns: Sequence[tuple[list[torch.Tensor], list[torch.Tensor]]],
    outputs: Sequence[torch.Tensor],
) -> list[StepResult]:
    """Append each row's keys and values to its session (`BlockSession.extend`), once the whole batch has
    computed: a session whose append raises (out of memory) gets that error (its session refuses further
    steps), the others keep their results (they are not rerun: their caches hold the step already)."""
    results: list[StepResult] = []
    for session, (keys, values), out in zip(sessions, columns, outputs, strict=True):
        try:
            session.extend(keys, values)
        except Exception as exc:
            results.append(exc)
        else:
            results.append(out)
    return results


def _gather(
    sessions: Sequence[BlockSession], layer_idx: int, longest: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The sessions' keys and values of one layer, left-padded with zeros to `longest` positions."""
    first = _layer(sessions[0], layer_idx)
    assert first.keys is not None and first.values is not None
    _, heads, _, head_dim = first.keys.shape
    keys = first.keys.new_zeros(len(sessions), heads, longest, head_dim)
    values = first.values.new_zeros(len(sessions), heads, longest, int(first.values.shape[-1]))
    for row, session in enumerate(sessions):
        layer = _layer(session, layer_idx)
        assert layer.keys is not None and layer.values is not None
        length = int(layer.keys.shape[-2])
        keys[row, :, longest - length :, :] = layer.keys[0]
        values[row, :, longest - length :, :] = layer.values[0]
    return keys, values


def _last_column(layer: DynamicLayer) -> tuple[torch.Tensor, torch.Tensor]:
    assert layer.keys is not None and layer.values is not None
    return layer.keys[:, :, -1:, :], layer.values[:, :, -1:, :]


def _layer(session: BlockSession, layer_idx: int) -> DynamicLayer:
    cache = session.cache
    if cache is None:
        raise ModelError("a session in the batch was closed; open a new one")
    return _dynamic_layer(cache, layer_idx)


def _dynamic_layer(cache: Cache, layer_idx: int) -> DynamicLayer:
    layer = cache.layers[layer_idx]
    if not isinstance(layer, DynamicLayer):
        raise ModelError(f"layer {layer_idx}'s cache is a {type(layer).__name__}, which cannot batch")
    return layer
