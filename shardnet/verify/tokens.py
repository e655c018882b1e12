"""The last hop checked on the tokens it made the client see.

The coordinator draws token s of a job from the last hop's logits at step s (greedy: the argmax; sampled:
`shardnet.verify.sampler.sample_token` from the job's seed). The last hop's verification package carries
those tokens (`ShownTokens`); the verifier recomputes the logits of every step in its one pass and checks
each token against them (`check_shown_tokens`): greedy, the reference argmax unless the top two are within
the tie margin; sampled, the seeded draw within the CDF margin.

A token the recomputed logits do not support is someone's fault, and only the hop's own signed work can
say whose. The hop committed the fingerprint of the logits it sent: the indices and values of the two
largest |logit|. When the largest committed value is positive and above every other committed |value|, it
is the largest logit the hop sent (no logit left out of the fingerprint is larger in magnitude), so the
fingerprint proves the sent argmax (`committed_argmax`):

- the shown token is that argmax: the hop's logits made the client see it; the hop is guilty (its own
  signed leaf is the evidence, so a coordinator cannot frame it by reporting other tokens);
- the shown token is another one: the coordinator showed a token the hop's logits did not make;
- the fingerprint cannot tell (the largest |logit| is negative or tied), or the job is sampled: the
  token is flagged as unsupported, attributed to nobody, and nobody is slashed for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from shardnet.verify.fingerprint import FingerprintError, parse_fingerprint
from shardnet.verify.sampler import check_greedy, check_sampled
from shardnet.verify.tolerance import Tolerance

MAX_TEMPERATURE = 10.0


class TokensError(ValueError):
    """Shown tokens that cannot be checked (malformed, or not one per step)."""


@dataclass(frozen=True)
class ShownTokens:
    """The tokens a job's last hop made the client see (token s from step s) and how they were drawn.

    temperature 0: greedy. seed: the caller's seed (`sampler.caller_seed`), None: the job's seed."""

    tokens: list[int]
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "tokens": list(self.tokens),
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
        }

    @classmethod
    def from_json(cls, data: Any, *, max_steps: int) -> ShownTokens:
        """Parse shown tokens; raises TokensError saying what is wrong."""
        if not isinstance(data, dict):
            raise TokensError('shown tokens are {"tokens": [...], "temperature", "top_p", "seed"}')
        tokens, seed = data.get("tokens"), data.get("seed")
        temperature, top_p = data.get("temperature", 0.0), data.get("top_p", 1.0)
        if not isinstance(tokens, list) or not 0 < len(tokens) <= max_steps:
            raise TokensError(f"shown tokens are a list of 1 to {max_steps} token ids")
        if not all(type(t) is int and 0 <= t < 2**31 for t in tokens):
            raise TokensError("each shown token is a non-negative integer token id")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (temperature, top_p)):
            raise TokensError("temperature and top_p are numbers")
        if not 0.0 <= float(temperature) <= MAX_TEMPERATURE or not 0.0 < float(top_p) <= 1.0:
            raise TokensError(f"temperature must be within [0, {MAX_TEMPERATURE}] and top_p within (0, 1]")
        if seed is not None and not (type(seed) is int and 0 <= seed < 2**63):
            raise TokensError("seed is null (the job's seed) or a non-negative 63-bit integer")
        return cls(list(tokens), float(temperature), float(top_p), seed)


@dataclass(frozen=True)
class TokenFindings:
    """What the check of the shown tokens found (step indices, in the hop's steps)."""

    checked: int
    unsupported: list[int] = field(default_factory=list)  # tokens the recomputed logits do not support
    by_hop: list[int] = field(default_factory=list)  # of those, made by the hop's own committed logits
    not_sent: list[int] = field(default_factory=list)  # of those, not what the hop's committed logits made

    @property
    def unattributed(self) -> list[int]:
        return [s for s in self.unsupported if s not in self.by_hop and s not in self.not_sent]

    def to_json(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "unsupported": self.unsupported[:64],
            "by_hop": self.by_hop[:64],
            "not_sent": self.not_sent[:64],
        }


def committed_argmax(fingerprint: bytes) -> int | None:
    """The argmax of the logits a last hop sent, as its committed fingerprint proves it, or None when the
    fingerprint cannot tell (its largest |value| is negative, or tied after fp16 rounding)."""
    try:
        parsed = parse_fingerprint(fingerprint)
    except FingerprintError:
        return None
    if parsed.positions != 1:
        return None
    values = parsed.values[0].to(torch.float64)
    best = int(torch.argmax(values))
    top = float(values[best])
    others = [abs(float(v)) for i, v in enumerate(values) if i != best]
    if top <= 0 or any(top <= o for o in others):
        return None
    return int(parsed.indices[0, best])


def check_shown_tokens(
    shown: ShownTokens,
    reference: torch.Tensor,
    fingerprints: Sequence[bytes],
    tolerance: Tolerance,
    seed: bytes,
) -> TokenFindings:
    """Check token s of `shown` against the recomputed logits `reference[s]` ([steps, vocab]) and attribute
    every unsupported one through the committed `fingerprints` (see the module docstring). `seed` is the
    32-byte seed the job draws from (`sampler.sampling_seed`)."""
    steps = int(reference.shape[0])
    if len(shown.tokens) != steps or len(fingerprints) != steps:
        raise TokensError(
            f"{len(shown.tokens)} shown tokens and {len(fingerprints)} fingerprints for {steps} steps: "
            "send one token per step of the last hop"
        )
    unsupported: list[int] = []
    by_hop: list[int] = []
    not_sent: list[int] = []
    for s, token in enumerate(shown.tokens):
        if shown.greedy:
            ok = check_greedy(token, reference[s], tolerance.tie_margin).ok
        else:
            ok = check_sampled(
                token, reference[s], seed, s, shown.temperature, tolerance.cdf_margin, shown.top_p
            ).ok
        if ok:
            continue
        unsupported.append(s)
        sent = committed_argmax(fingerprints[s]) if shown.greedy else None
        if sent is not None:
            (by_hop if sent == token else not_sent).append(s)
    return TokenFindings(steps, unsupported, by_hop, not_sent)
