"""Choosing the next token from the last hop's logits: greedy, or seeded temperature / top-p sampling.

Sampling is reproducible: a `Sampler` owns a `torch.Generator` seeded once per job, so the same seed,
prompt and logits give the same tokens, after a failover as well as in a re-run of the whole job.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import torch

from shardnet.errors import ConfigError


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens. temperature 0 means greedy (argmax; top_p and seed are then unused).

    ignore_eos (as in vLLM) keeps generating past the end-of-sequence token up to max tokens: for benchmarks.
    chat wraps a paid job's prompt in the model's chat template (as one user message) before tokenizing; the
    on-chain inputHash stays the hash of the prompt the client sent.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False
    chat: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.temperature <= 10.0:
            raise ConfigError(f"temperature must be within [0, 10], got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p must be within (0, 1], got {self.top_p}")
        if self.seed is not None and not 0 <= self.seed < 2**63:
            raise ConfigError(f"seed must be a non-negative 63-bit integer, got {self.seed}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def with_seed(self) -> SamplingParams:
        """These parameters with a seed fixed (a fresh random one if none was given), for a job record."""
        if self.seed is not None or self.greedy:
            return self
        return SamplingParams(self.temperature, self.top_p, secrets.randbits(62), self.ignore_eos, self.chat)


class Sampler:
    """Picks tokens one after the other for one generation."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params if params.greedy else params.with_seed()
        self._generator = torch.Generator(device="cpu")
        if self.params.seed is not None:
            self._generator.manual_seed(self.params.seed)

    def __call__(self, logits: torch.Tensor) -> int:
        """Return the next token id from logits of shape [vocab] (or [1, 1, vocab])."""
        scores = logits.reshape(-1).to(torch.float32)
        if self.params.greedy:
            return int(torch.argmax(scores).item())
        probs = torch.softmax(scores / self.params.temperature, dim=-1)
        if self.params.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            cumulative = torch.cumsum(sorted_probs, dim=-1)
            # keep the smallest prefix whose mass reaches top_p (always at least one token)
            keep = cumulative - sorted_probs < self.params.top_p
            sorted_probs = torch.where(keep, sorted_probs, torch.zeros_like(sorted_probs))
            choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=self._generator)
            return int(order[choice].item())
        return int(torch.multinomial(probs, 1, generator=self._generator).item())
