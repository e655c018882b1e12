"""Choosing the next token from the last hop's logits: greedy, or seeded temperature / top-p sampling.

A paid job's tokens are drawn by `shardnet.verify.sampler` from the job's seed (`Sampler(params, seed=
sampling_seed(chain id, registry, job id, params.seed))`): token s is a function of the last hop's logits
at step s and a seed any verifier recomputes, so the after-the-fact check can tell whether the tokens the
client was shown are what the logits support (greedy: the argmax, up to the tie margin). How a caller's
seed enters: none given, the job's seed rules (`job_seed(chain id, registry, job id)`); one given, the
draws come from `caller_seed(chain id, registry, seed)`, so the same seed and prompt give the same tokens
in every job of the deployment, and the seed travels in the verification package. Either way a re-run or
a restart draws the same tokens.

Without a seed (no job: tests, tools) a `torch.Generator` seeded from `params.seed` draws instead.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import torch

from shardnet.errors import ConfigError
from shardnet.verify.sampler import sample_token


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
    """Picks tokens one after the other for one generation (token s from the s-th logits it is given).

    `seed` (32 bytes, `shardnet.verify.sampler.sampling_seed`): draw each token from it, as a verifier
    recomputes; None: from a `torch.Generator` seeded by `params.seed` (a fresh random one if None).
    """

    def __init__(self, params: SamplingParams, *, seed: bytes | None = None) -> None:
        if seed is not None and len(seed) != 32:
            raise ValueError(f"a sampling seed is 32 bytes, got {len(seed)}")
        self.seed = seed
        self.step = 0
        self.params = params if params.greedy or seed is not None else params.with_seed()
        self._generator = torch.Generator(device="cpu")
        if self.params.seed is not None:
            self._generator.manual_seed(self.params.seed)

    def __call__(self, logits: torch.Tensor) -> int:
        """Return the next token id from logits of shape [vocab] (or [1, 1, vocab])."""
        step, self.step = self.step, self.step + 1
        scores = logits.reshape(-1).to(torch.float32)
        if self.params.greedy:
            return int(torch.argmax(scores).item())
        if self.seed is not None:
            return sample_token(scores, self.seed, step, self.params.temperature, self.params.top_p)
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
