#!/usr/bin/env python
"""Measure the fingerprint distance between honest runs, to choose the tolerances of shardnet/verify/tolerance.py.

Workers run step by step (KV cache) in a dtype at a thread count; the verifier recomputes each hop in
one float32 pass with one thread. For each pair it prints the distribution of per-step distances, the
last hop's logit drift (for the greedy tie margin) and CDF drift (for sampled jobs), and the
tolerance MARGIN x the largest value seen. Example (about 2 minutes on 1 core):

    python scripts/calibrate_verify.py --models tiny smollm2 --jobs 4 --steps 24 --json calib.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from verify_models import VerifyModel, load_model  # noqa: E402

from shardnet.verify.check import recompute_span  # noqa: E402
from shardnet.verify.fingerprint import fingerprint_distance  # noqa: E402
from shardnet.verify.sampler import cumulative_probs  # noqa: E402
from shardnet.verify.simulate import honest_factories, run_job  # noqa: E402
from shardnet.verify.tolerance import MARGIN  # noqa: E402

# (label, worker dtype, worker threads): the verifier is always float32 with one thread
VARIANTS = [
    ("fp32 step-by-step vs fp32 prefill", torch.float32, 1),
    ("fp32 2 threads vs 1 thread", torch.float32, 2),
    ("bf16 vs fp32", torch.bfloat16, 1),
    ("fp16 vs fp32", torch.float16, 1),
]


def quantiles(values: list[float]) -> dict[str, float]:
    t = torch.tensor(values, dtype=torch.float64)
    q = torch.quantile(
        t, torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64)
    ).tolist()  # (few jobs: p99 ~ max)
    return {"n": len(values), "p50": q[0], "p90": q[1], "p99": q[2], "max": float(t.max())}


def measure(
    model: VerifyModel, dtype: torch.dtype, threads: int, jobs: int, steps: int
) -> dict[str, list[float]]:
    workers = model.blocks(dtype)
    verifiers = model.blocks(torch.float32)
    gen = torch.Generator().manual_seed(1234)
    out: dict[str, list[float]] = {
        "distance": [],
        "job_median": [],
        "logit_drift": [],
        "cdf_drift": [],
        "token_gap": [],
    }
    for job in range(jobs):
        prompt = model.prompt(job, gen)
        trace = run_job(honest_factories(workers, prompt.shape[1] + steps, threads), prompt, steps)
        for verifier, hop in zip(verifiers, trace.hops, strict=True):
            ref = recompute_span(verifier, hop.inputs)
            offset = 0
            hop_distances: list[float] = []
            for x, fp, sent in zip(hop.inputs, hop.fingerprints, hop.outputs, strict=True):
                n = int(x.shape[1])
                rows = ref[offset + n - 1 : offset + n] if verifier.is_last else ref[offset : offset + n]
                offset += n
                hop_distances.append(fingerprint_distance(fp, rows))
                if verifier.is_last:
                    r, w = rows[0].double(), sent.reshape(-1).double()
                    top2 = torch.topk(r, 2).indices.tolist()
                    token = int(torch.argmax(w))
                    out["logit_drift"].append(float((w - r).abs()[[*top2, token]].max()))
                    out["token_gap"].append(float(r[top2[0]] - r[token]))
                    out["cdf_drift"].append(
                        float((cumulative_probs(w, 1.0) - cumulative_probs(r, 1.0)).abs().max())
                    )
            out["distance"] += hop_distances
            out["job_median"].append(statistics.median(hop_distances))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["tiny"], help="models to measure: tiny, smollm2")
    parser.add_argument("--jobs", type=int, default=4, help="jobs (prompts) per model and pair")
    parser.add_argument("--steps", type=int, default=24, help="generated tokens (steps) per job")
    parser.add_argument(
        "--variants", nargs="*", type=int, help="indices into the pair list to run (default all)"
    )
    parser.add_argument("--json", type=Path, help="also write the raw figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(1)
    chosen = [VARIANTS[i] for i in args.variants] if args.variants else VARIANTS
    report: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for name in args.models:
        model = load_model(name)
        for label, dtype, threads in chosen:
            figures = measure(model, dtype, threads, args.jobs, args.steps)
            stats = {key: quantiles(vals) for key, vals in figures.items()}
            report.setdefault(label, {})[name] = stats
            print(
                f"{name:8s} {label:34s} "
                + "  ".join(
                    f"{key}: p50 {s['p50']:.2e} p99 {s['p99']:.2e} max {s['max']:.2e}"
                    for key, s in stats.items()
                ),
                flush=True,
            )
    print(f"\nchosen tolerances (MARGIN {MARGIN} x the largest over models):")
    for label, per_model in report.items():
        dist = max(s["distance"]["max"] for s in per_model.values())
        median = max(s["job_median"]["max"] for s in per_model.values())
        drift = max(s["logit_drift"]["max"] for s in per_model.values())
        cdf = max(s["cdf_drift"]["max"] for s in per_model.values())
        print(
            f"  {label:34s} distance {MARGIN * dist:.3g}  job_median {MARGIN * median:.3g}  tie_margin {MARGIN * 2 * drift:.3g}  cdf_margin {MARGIN * cdf:.3g}"
        )
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
