"""Cheating hops, for the cheat sweep and the tests: each sends something other than its span's output
and commits the fingerprint of what it sent (a commitment binds the bytes sent; see fingerprint.leaf).

- `NoiseHop`: the honest output plus Gaussian noise of a relative size (gross, subtle), on every step
  or on a random share of steps (sparse);
- `LayersHop`: runs only some of its layers (none: lazy; the first half: half layers); on the last hop
  with no layers it is the logit lens (final norm and head applied to its input);
- `int8_block`: a copy of a block with int8 weights (per output row, symmetric), run as an honest hop;
- `SecondBestHop`: the last hop swaps its top two logits, so the client gets the second-best token.
"""

from __future__ import annotations

import copy
import random

import torch
from torch import nn

from shardnet.model.adapters import DecoderAdapter
from shardnet.model.block import Block
from shardnet.model.device import to_cpu, to_device
from shardnet.span import LayerSpan
from shardnet.verify.simulate import HonestHop


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x.float().pow(2).mean(dim=-1, keepdim=True).sqrt()


class NoiseHop:
    """Honest output + noise of relative RMS `rel_noise` on a share `share` of steps (seeded per job)."""

    def __init__(self, inner: HonestHop, rel_noise: float, share: float = 1.0, seed: int = 0) -> None:
        self.inner = inner
        self.rel_noise = rel_noise
        self.share = share
        self.rng = random.Random(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.corrupted_steps: list[int] = []

    def step(self, x: torch.Tensor, start_pos: int, step: int) -> torch.Tensor:
        out = self.inner.step(x, start_pos, step)
        if self.rng.random() >= self.share:
            return out
        self.corrupted_steps.append(step)
        noise = torch.randn(out.shape, generator=self.gen) * _rms(out) * self.rel_noise
        return (out.float() + noise).to(out.dtype)

    def close(self) -> None:
        self.inner.close()


class LayersHop:
    """Runs only `layers` (a sub-span of its block, or None for no layers) over the cached sequence."""

    def __init__(self, block: Block, layers: LayerSpan | None, max_length: int) -> None:
        if not isinstance(block.adapter, DecoderAdapter):
            raise ValueError("layer-skipping cheats need a decoder block")
        if layers is not None and not (block.span.start <= layers.start and layers.end <= block.span.end):
            raise ValueError(f"layers {layers} are not within the block's span {block.span}")
        self.block = block
        self.adapter: DecoderAdapter = block.adapter
        self.layers = layers
        self.cache = self.adapter.new_cache(block.config)
        self.max_length = max_length

    def step(self, x: torch.Tensor, start_pos: int, step: int) -> torch.Tensor:
        block = self.block
        with torch.inference_mode():
            n = int(x.shape[1])
            position_ids = torch.arange(start_pos, start_pos + n, device=block.device).unsqueeze(0)
            x = to_device(x, block.device)
            hidden = (
                self.adapter.embed(block.module, x, position_ids) if block.is_first else x.to(block.dtype)
            )
            if self.layers is not None:
                hidden = self.adapter.run_layers(block.module, hidden, self.layers, self.cache, position_ids)
            return to_cpu(self.adapter.logits(block.module, hidden).float() if block.is_last else hidden)

    def close(self) -> None:
        self.cache = None  # type: ignore[assignment]


def half_layers(span: LayerSpan) -> LayerSpan:
    """The first half of a span's layers (at least one)."""
    return LayerSpan(span.start, span.start + max(1, len(span) // 2))


def int8_block(block: Block) -> Block:
    """A copy of `block` whose linear and embedding weights are rounded to int8 (per row, symmetric)."""
    module = copy.deepcopy(block.module)
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, (nn.Linear, nn.Embedding)):
                w = sub.weight
                scale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0
                w.copy_((w / scale).round().clamp(-127, 127) * scale)
    return Block(block.adapter, block.config, block.span, module, block.dtype)


class SecondBestHop:
    """A last hop that swaps its top two logits on a share of steps (seeded per job)."""

    def __init__(self, inner: HonestHop, share: float = 1.0, seed: int = 0) -> None:
        self.inner = inner
        self.share = share
        self.rng = random.Random(seed)
        self.corrupted_steps: list[int] = []

    def step(self, x: torch.Tensor, start_pos: int, step: int) -> torch.Tensor:
        out = self.inner.step(x, start_pos, step)
        if self.rng.random() >= self.share:
            return out
        self.corrupted_steps.append(step)
        out = out.clone()
        row = out[0, -1]
        top = torch.topk(row, 2).indices
        a, b = int(top[0]), int(top[1])
        row[a], row[b] = row[b].clone(), row[a].clone()
        return out

    def close(self) -> None:
        self.inner.close()
