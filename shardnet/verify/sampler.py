"""The seeded sampler of sampled jobs, and the rules that check a last hop's token.

A sampled job draws token t of step s from the uniform number u(seed, s) in [0, 1): the first token
(in vocabulary order) whose cumulative probability exceeds u. The seed is bound to the job
(`job_seed`: chain id, registry, job id), so the coordinator, the worker and any verifier draw the same
u and the only freedom left is numerical drift in the probabilities, which `cdf_margin` absorbs.

Greedy jobs must emit the argmax, unless the top two reference logits are within `tie_margin`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from eth_utils import keccak

_DOMAIN = b"shardnet-sampler/1"


def job_seed(chain_id: int, registry: str, job_id: int) -> bytes:
    """The 32-byte sampling seed of a job: keccak256(domain, chain id, registry address, job id)."""
    address = bytes.fromhex(registry.removeprefix("0x"))
    if len(address) != 20:
        raise ValueError(f"registry must be a 20-byte address (0x + 40 hex digits), got {registry!r}")
    return keccak(_DOMAIN + chain_id.to_bytes(32, "big") + address + job_id.to_bytes(32, "big"))


def uniform(seed: bytes, step: int) -> float:
    """The job's uniform draw in [0, 1) for `step`: the first 53 bits of keccak256(seed || step)."""
    if len(seed) != 32:
        raise ValueError(f"a job seed is 32 bytes, got {len(seed)}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    word = int.from_bytes(keccak(seed + step.to_bytes(8, "big"))[:8], "big")
    return (word >> 11) / float(1 << 53)


def cumulative_probs(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The cumulative distribution (float64, vocabulary order) of softmax(logits / temperature)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for sampling (use greedy for 0), got {temperature}")
    probs = torch.softmax(logits.reshape(-1).to(torch.float64) / temperature, dim=0)
    return torch.cumsum(probs, dim=0)


def sample_token(logits: torch.Tensor, seed: bytes, step: int, temperature: float = 1.0) -> int:
    """The token the job's sampler draws at `step` from these logits (deterministic in seed and step)."""
    cdf = cumulative_probs(logits, temperature)
    u = uniform(seed, step) * float(cdf[-1])
    return min(
        int(torch.searchsorted(cdf, torch.tensor([u], dtype=torch.float64), right=True)), cdf.numel() - 1
    )


@dataclass(frozen=True)
class TokenCheck:
    """Whether an emitted token is what the reference logits allow, and by how much."""

    ok: bool
    expected: int  # the reference's argmax (greedy) or the seeded draw (sampled)
    margin: float  # greedy: reference top logit minus the token's logit; sampled: distance of u outside the token's interval


def check_greedy(token: int, reference_logits: torch.Tensor, tie_margin: float) -> TokenCheck:
    """Greedy: the token must be the reference argmax, or within `tie_margin` (logit units) of its logit."""
    flat = reference_logits.reshape(-1).to(torch.float64)
    if not 0 <= token < flat.numel() or not bool(torch.isfinite(flat).all()):
        return TokenCheck(False, int(torch.argmax(flat)) if flat.numel() else -1, float("inf"))
    best = int(torch.argmax(flat))
    gap = float(flat[best] - flat[token])
    return TokenCheck(gap <= tie_margin, best, gap)


def check_sampled(
    token: int, reference_logits: torch.Tensor, seed: bytes, step: int, temperature: float, cdf_margin: float
) -> TokenCheck:
    """Sampled: the job's draw u must fall in the token's reference interval, widened by `cdf_margin`."""
    cdf = cumulative_probs(reference_logits, temperature)
    expected = sample_token(reference_logits, seed, step, temperature)
    if not 0 <= token < cdf.numel():
        return TokenCheck(False, expected, float("inf"))
    u = uniform(seed, step) * float(cdf[-1])
    low = float(cdf[token - 1]) if token > 0 else 0.0
    high = float(cdf[token])
    outside = max(low - u, u - high, 0.0)
    return TokenCheck(outside <= cdf_margin, expected, outside)
