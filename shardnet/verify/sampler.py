"""The seeded sampler of sampled jobs, and the rules that check a last hop's token.

A sampled job draws token t of step s from the uniform number u(seed, s) in [0, 1): the first token
(in vocabulary order) whose cumulative probability exceeds u. The seed is bound to the job
(`job_seed`: chain id, registry, job id), so the coordinator, the worker and any verifier draw the same
u and the only freedom left is numerical drift in the probabilities, which `cdf_margin` absorbs.

A caller that gives its own seed (OpenAI's `seed`) gets `caller_seed(chain id, registry, seed)` instead:
bound to the deployment and the seed, not the job, so the same seed and prompt give the same tokens in
every job (reproducible), and a verifier that is told the seed recomputes every draw. `sampling_seed`
picks between the two. top_p < 1 keeps the nucleus (the smallest set of most probable tokens, in
descending probability, ties to the lower id, whose mass reaches top_p) and draws in vocabulary order
from its renormalized probabilities.

Greedy jobs must emit the argmax, unless the top two reference logits are within `tie_margin`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from eth_utils import keccak

_DOMAIN = b"shardnet-sampler/1"
_CALLER_DOMAIN = b"shardnet-sampler-caller/1"


def _address(registry: str) -> bytes:
    address = bytes.fromhex(registry.removeprefix("0x"))
    if len(address) != 20:
        raise ValueError(f"registry must be a 20-byte address (0x + 40 hex digits), got {registry!r}")
    return address


def job_seed(chain_id: int, registry: str, job_id: int) -> bytes:
    """The 32-byte sampling seed of a job: keccak256(domain, chain id, registry address, job id)."""
    return keccak(_DOMAIN + chain_id.to_bytes(32, "big") + _address(registry) + job_id.to_bytes(32, "big"))


def caller_seed(chain_id: int, registry: str, seed: int) -> bytes:
    """The 32-byte sampling seed of a caller-given seed: keccak256(domain, chain id, registry, seed)."""
    if not 0 <= seed < 2**63:
        raise ValueError(f"a caller seed is a non-negative 63-bit integer, got {seed}")
    return keccak(
        _CALLER_DOMAIN + chain_id.to_bytes(32, "big") + _address(registry) + seed.to_bytes(8, "big")
    )


def sampling_seed(chain_id: int, registry: str, job_id: int, seed: int | None) -> bytes:
    """The seed a job's tokens are drawn from: the caller's (`caller_seed`) if it gave one, else the job's."""
    return job_seed(chain_id, registry, job_id) if seed is None else caller_seed(chain_id, registry, seed)


def uniform(seed: bytes, step: int) -> float:
    """The job's uniform draw in [0, 1) for `step`: the first 53 bits of keccak256(seed || step)."""
    if len(seed) != 32:
        raise ValueError(f"a job seed is 32 bytes, got {len(seed)}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    word = int.from_bytes(keccak(seed + step.to_bytes(8, "big"))[:8], "big")
    return (word >> 11) / float(1 << 53)


def probabilities(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / temperature) in float64, vocabulary order."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 for sampling (use greedy for 0), got {temperature}")
    return torch.softmax(logits.reshape(-1).to(torch.float64) / temperature, dim=0)


def nucleus_order(probs: torch.Tensor) -> torch.Tensor:
    """Token ids by descending probability, ties to the lower id."""
    return torch.sort(-probs, stable=True).indices


def nucleus_size(probs: torch.Tensor, order: torch.Tensor, top_p: float) -> int:
    """How many of the most probable tokens (in `order`) the nucleus of `top_p` keeps (at least one)."""
    if top_p >= 1.0:
        return int(probs.numel())
    cumulative = torch.cumsum(probs[order], dim=0)
    return max(1, int((cumulative - probs[order] < top_p).sum()))


def _cdf_of(probs: torch.Tensor, order: torch.Tensor, keep: int) -> torch.Tensor:
    if keep >= probs.numel():
        return torch.cumsum(probs, dim=0)
    kept = torch.zeros_like(probs)
    kept[order[:keep]] = probs[order[:keep]]
    return torch.cumsum(kept, dim=0)


def cumulative_probs(logits: torch.Tensor, temperature: float, top_p: float = 1.0) -> torch.Tensor:
    """The cumulative distribution (float64, vocabulary order, not renormalized) of softmax(logits /
    temperature) restricted to the nucleus of `top_p`."""
    probs = probabilities(logits, temperature)
    if top_p >= 1.0:
        return torch.cumsum(probs, dim=0)
    order = nucleus_order(probs)
    return _cdf_of(probs, order, nucleus_size(probs, order, top_p))


def sample_token(
    logits: torch.Tensor, seed: bytes, step: int, temperature: float = 1.0, top_p: float = 1.0
) -> int:
    """The token the job's sampler draws at `step` from these logits (deterministic in seed and step)."""
    cdf = cumulative_probs(logits, temperature, top_p)
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
    token: int,
    reference_logits: torch.Tensor,
    seed: bytes,
    step: int,
    temperature: float,
    cdf_margin: float,
    top_p: float = 1.0,
) -> TokenCheck:
    """Sampled: the job's draw u must fall in the token's reference interval, widened by `cdf_margin`.

    With top_p < 1 honest drift can move the nucleus' edge: every nucleus between those of top_p -
    cdf_margin and top_p + cdf_margin is tried, and the token passes if it passes in one of them."""
    probs = probabilities(reference_logits, temperature)
    expected = sample_token(reference_logits, seed, step, temperature, top_p)
    if not 0 <= token < probs.numel():
        return TokenCheck(False, expected, float("inf"))
    order = nucleus_order(probs)
    if top_p >= 1.0:
        sizes = [int(probs.numel())]
    else:
        low_size = nucleus_size(probs, order, max(top_p - cdf_margin, 1e-12))
        sizes = list(range(low_size, nucleus_size(probs, order, min(top_p + cdf_margin, 1.0)) + 1))
    best = float("inf")
    for keep in sizes:
        cdf = _cdf_of(probs, order, keep)
        u = uniform(seed, step) * float(cdf[-1])
        low = float(cdf[token - 1]) if token > 0 else 0.0
        high = float(cdf[token])
        if high <= low:  # not in this nucleus
            continue
        best = min(best, max(low - u, u - high, 0.0))
    return TokenCheck(best <= cdf_margin, expected, best)
