"""Tolerances per (worker dtype, verifier dtype), calibrated by scripts/calibrate_verify.py.

Each figure is `MARGIN` x the largest value measured between honest runs (tiny model and SmolLM2;
step-by-step worker vs one-pass verifier; 1 vs 2 threads): step distance, median step distance of a
hop's job, twice the logit drift (tie margin), CDF drift; docs/verification.md has the distributions. A verifier always recomputes in float32. A dtype pair not in the table has no
calibration: refuse it when the worker announces, never guess.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MARGIN = 4.0  # chosen tolerance = MARGIN x the largest honest figure measured


@dataclass(frozen=True)
class Tolerance:
    """How far an honest worker's committed step may be from the verifier's recomputation."""

    distance: float  # fingerprint distance (shardnet.verify.fingerprint) of any one step
    job_median: float  # median of the step distances of one hop of one job (catches cheats on every step)
    tie_margin: (
        float  # greedy last hop: accepted gap (logits) between the reference top logit and the token's
    )
    cdf_margin: float  # sampled last hop: accepted distance of the job's draw outside the token's interval


# measured maxima (see docs/verification.md) x MARGIN; keys: (worker dtype, verifier dtype)
TOLERANCES: dict[tuple[str, str], Tolerance] = {
    ("float32", "float32"): Tolerance(distance=5e-3, job_median=1.5e-3, tie_margin=2.2e-4, cdf_margin=2.2e-5),
    ("bfloat16", "float32"): Tolerance(distance=0.71, job_median=0.083, tie_margin=3.2, cdf_margin=0.19),
    ("float16", "float32"): Tolerance(distance=0.08, job_median=0.015, tie_margin=0.46, cdf_margin=0.019),
}


def dtype_name(dtype: torch.dtype | str) -> str:
    """'float32', 'bfloat16', ... for a torch dtype or its name."""
    return str(dtype).removeprefix("torch.")


def tolerance_for(
    worker_dtype: torch.dtype | str, verifier_dtype: torch.dtype | str = "float32"
) -> Tolerance:
    """The calibrated tolerance of a worker running `worker_dtype` checked by a verifier in `verifier_dtype`."""
    key = (dtype_name(worker_dtype), dtype_name(verifier_dtype))
    try:
        return TOLERANCES[key]
    except KeyError:
        known = ", ".join(f"{w} checked in {v}" for w, v in TOLERANCES)
        raise ValueError(
            f"no calibrated tolerance for a {key[0]} worker checked in {key[1]} (calibrated: {known}); "
            "refuse this dtype at announce, or calibrate it with scripts/calibrate_verify.py"
        ) from None
