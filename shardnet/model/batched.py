"""Decode steps of many sessions of one decoder block run as one batched forward (docs/batching.md).

Each session keeps its own KV cache (a DynamicCache, as for one sequence). For a batch, the caches of
the span's layers are gathered into one padded cache, left-padded with zeros to the longest session,
with a 2D attention mask that hides the padding; every row gets its own position. After the forward,
the one new key/value column of each row is appended to its session's own cache (`BlockSession.extend`),
so a session leaves a batch exactly as it would leave a step of its own, bar the last bits of floats
that the batched matrix products may round differently.

Only decode steps batch: one new position on a session that has cached at least one, on full-attention
layers (sliding-window caches keep a window, not every position). A lone step, a prefill, or a batch
whose forward raises runs through `BlockSession.step`, the exact single-sequence path.
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
    alone: list[int] = []
    for i, (session, x, pos) in enumerate(zip(sessions, inputs, start_positions, strict=True)):
        try:
            session.check_step(x, pos)
        except ModelError as exc:
            results[i] = exc
            continue
        (batchable if len(sessions) > 1 and can_batch(session, x) else alone).append(i)
    if len(batchable) == 1 or len({id(sessions[i].block) for i in batchable}) > 1:
        alone, batchable = sorted(alone + batchable), []
    if batchable:
        try:
            outputs = decode_batch([sessions[i] for i in batchable], [inputs[i] for i in batchable])
        except Exception:  # nothing was written to the sessions' caches: run each alone instead
            logger.exception(
                "a batched decode of %d sessions failed; running them one by one", len(batchable)
            )
            alone = sorted(alone + batchable)
        else:
            for i, out in zip(batchable, outputs, strict=True):
                results[i] = out
    for i in alone:
        try:
            results[i] = sessions[i].step(inputs[i], start_positions[i])
        except Exception as exc:
            results[i] = exc
    return [r if r is not None else ModelError("step not run") for r in results]


def can_batch(session: BlockSession, x: torch.Tensor) -> bool:
    """Whether this (checked) step may join a batched decode: one new position after at least one,
    every span layer's cache a plain full-attention DynamicLayer."""
    cache = session.cache
    if cache is None or int(x.shape[1]) != 1 or session.length < 1:
        return False
    span = session.block.span
    layers = getattr(cache, "layers", None)
    if layers is None or len(layers) < span.end:
        return False
    return all(
        type(layers[i]) is DynamicLayer and layers[i].get_seq_length() == session.length
        for i in range(span.start, span.end)
    )


def decode_batch(sessions: Sequence[BlockSession], inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
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
        new_columns = [
            _last_column(_dynamic_layer(padded, i)) for i in range(block.span.start, block.span.end)
        ]
        for row, session in enumerate(sessions):
            session.extend(
                [k[row : row + 1] for k, _ in new_columns], [v[row : row + 1] for _, v in new_columns]
            )
    out = to_cpu(out)
    return [out[row : row + 1] for row in range(count)]


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
