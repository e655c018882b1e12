"""A KV-cache session of one decoder block: the positions it has seen and its layers' keys and values."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from shardnet.model.adapters import DecoderAdapter, ModelError
from shardnet.model.device import to_cpu, to_device

if TYPE_CHECKING:
    from transformers.cache_utils import Cache

    from shardnet.model.block import Block

logger = logging.getLogger(__name__)


class SessionPositionError(ModelError):
    """A step's start position is not the number of positions the session has cached."""


class BlockSession:
    """Runs one sequence through a decoder block, step by step, keeping the block's KV cache.

    `step(x, start_pos)` takes positions start_pos .. start_pos+n-1: token ids [1, n] on the first
    block, hidden states [1, n, hidden] on the others. A failed step leaves the cache in an unknown
    state, so the session refuses further steps; open a new one and replay the inputs.
    Inputs and outputs are on the CPU; the KV cache lives on the block's device.
    """

    def __init__(self, block: Block, max_length: int | None) -> None:
        if not isinstance(block.adapter, DecoderAdapter):
            raise ModelError(f"a {block.kind} block has no KV-cache sessions")
        self.block = block
        self.max_length = max_length
        self.length = 0  # positions cached so far
        self._adapter: DecoderAdapter = block.adapter
        self._cache: Cache | None = self._adapter.new_cache(block.config)  # None once closed
        self._closed = False
        self._failed: str | None = None

    @property
    def closed(self) -> bool:
        return self._closed

    def step(self, x: torch.Tensor, start_pos: int) -> torch.Tensor:
        """Run positions `start_pos`.. through the block; returns hidden states or, on the last block,
        float32 logits of the last position [1, 1, vocab]."""
        cache = self.check_step(x, start_pos)
        block = self.block
        n = int(x.shape[1])
        try:
            with torch.inference_mode():
                position_ids = torch.arange(start_pos, start_pos + n, device=block.device).unsqueeze(0)
                x = to_device(x, block.device)
                if block.is_first:
                    hidden = self._adapter.embed(block.module, x, position_ids)
                else:
                    hidden = x.to(block.dtype)
                hidden = self._adapter.run_layers(block.module, hidden, block.span, cache, position_ids)
                out = self._adapter.logits(block.module, hidden).float() if block.is_last else hidden
                out = to_cpu(out)
        except Exception as exc:
            self._failed = f"{type(exc).__name__}: {exc}"
            raise
        self.length += n
        return out

    def check_step(self, x: torch.Tensor, start_pos: int) -> Cache:
        """Raise ModelError unless `step(x, start_pos)` may run; returns the session's cache."""
        cache = self._cache
        if self._closed or cache is None:
            raise ModelError("this session is closed; open a new one with block.new_session()")
        if self._failed is not None:
            raise ModelError(
                f"an earlier step failed ({self._failed}); open a new session and replay the inputs"
            )
        if start_pos != self.length:
            raise SessionPositionError(
                f"step starts at position {start_pos}, but the session holds {self.length} positions; "
                f"send the inputs from position {self.length}"
            )
        self.block.check_input(x)
        n = int(x.shape[1])
        if self.max_length is not None and self.length + n > self.max_length:
            raise ModelError(
                f"{self.length} + {n} positions exceed this session's max_length {self.max_length}"
            )
        return cache

    def extend(self, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> None:
        """Append positions computed in a batch (`shardnet.model.batched`): for each span layer, in order,
        its keys and values [1, kv_heads, n, head_dim] (n: 1 for a decode step, the prompt for a prefill).
        The cache then holds what `step` of the same positions would have left (a DynamicCache appends
        with the same cat, which copies). The tensors are on the block's device, as the cache is."""
        cache = self._cache
        if cache is None:
            raise ModelError("this session is closed; open a new one with block.new_session()")
        try:
            for layer_idx, k, v in zip(
                range(self.block.span.start, self.block.span.end), keys, values, strict=True
            ):
                cache.update(k, v, layer_idx)
        except Exception as exc:  # some layers may hold the new positions, others not: unusable
            self._failed = f"{type(exc).__name__}: {exc}"
            raise
        self.length += int(keys[0].shape[-2]) if keys else 0

    @property
    def cache(self) -> Cache | None:
        """The session's KV cache (None once closed); `shardnet.model.batched` reads it."""
        return self._cache

    def close(self) -> None:
        """Free the KV cache. Further steps raise."""
        self._closed = True
        self._cache = None

    def __enter__(self) -> BlockSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Greedy:
    """The result of greedy decoding: `tokens[i]` is the argmax of `logits[i]`."""

    tokens: list[int]
    logits: torch.Tensor  # [n, vocab] float32


def check_chain(blocks: Sequence[Block]) -> None:
    """Raise ModelError unless `blocks` are consecutive spans covering every layer of one model."""
    if not blocks:
        raise ModelError("a chain needs at least one block")
    expected = 0
    for b in blocks:
        if b.span.start != expected:
            raise ModelError(f"block {b.span} does not start where the previous one ended (layer {expected})")
        expected = b.span.end
    if expected != blocks[-1].num_layers:
        raise ModelError(f"the chain ends at layer {expected} of {blocks[-1].num_layers}")


def generate_greedy(blocks: Sequence[Block], ids: torch.Tensor, n: int) -> Greedy:
    """Greedy-decode `n` tokens after prompt `ids` [1, p] through a chain of decoder blocks, in process.

    The prompt runs as one prefill step, then one step per token, each block with its own session.
    """
    check_chain(blocks)
    sessions = [b.new_session(max_length=ids.shape[1] + n) for b in blocks]
    tokens: list[int] = []
    logits: list[torch.Tensor] = []
    x, pos = ids, 0
    try:
        for _ in range(n):
            h = x
            for s in sessions:
                h = s.step(h, pos)
            pos += x.shape[1]
            step_logits = h[0, -1]
            token = int(torch.argmax(step_logits))
            tokens.append(token)
            logits.append(step_logits)
            x = torch.tensor([[token]], dtype=torch.int64)
    finally:
        for s in sessions:
            s.close()
    return Greedy(tokens, torch.stack(logits) if logits else torch.empty(0))
