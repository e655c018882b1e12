#!/usr/bin/env python
"""CPU time of checking a hop after the fact vs CPU time of serving it, per hop, on one thread.

Serving: the hop's block session, step by step (prompt prefill, then one position a step), plus the
fingerprint of each output. Checking: `check_hop` (one prefill-style pass over all positions, the
fingerprints compared, the sent tensors re-fingerprinted; the last hop's head on each step's last
position only). `full head` repeats the last hop's check with the head over every position (before
`recompute_span(step_ends=True)`). The job line adds the hops up and multiplies by the verifiers each
hop gets as wired (2: the first stage of coordinator/disputes.py, an honest hop's whole check).
Times are process CPU seconds (one thread: the compute, little of the shared machine's load). Example:

    python scripts/verify_cost.py --model smollm2 --steps 24 128
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from verify_models import load_model  # noqa: E402

from shardnet.verify.check import check_hop, recompute_span  # noqa: E402
from shardnet.verify.fingerprint import make_fingerprint  # noqa: E402
from shardnet.verify.tolerance import tolerance_for  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2", help="tiny or smollm2")
    parser.add_argument("--steps", type=int, nargs="+", default=[24, 128], help="generated tokens per job")
    parser.add_argument("--repeats", type=int, default=2, help="jobs per length (the fastest is kept)")
    parser.add_argument("--verifiers", type=int, default=2, help="verifiers per checked hop (2 as wired)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model)
    blocks = model.blocks()
    tol = tolerance_for("float32")
    gen = torch.Generator().manual_seed(0)
    print(
        f"{'model':8s} {'steps':>5s} {'hop':5s} {'positions':>9s} {'serve s':>8s} {'check s':>8s} {'check/serve':>11s} "
        f"{'full head':>9s}"
    )
    for steps in args.steps:
        best: dict[int, tuple[float, float, int, float]] = {}
        for _ in range(args.repeats):
            prompt = model.prompt(0, gen)
            sessions = [b.new_session(max_length=prompt.shape[1] + steps) for b in blocks]
            inputs: list[list[torch.Tensor]] = [[] for _ in blocks]
            outputs: list[list[torch.Tensor]] = [[] for _ in blocks]
            fps: list[list[bytes]] = [[] for _ in blocks]
            serve = [0.0] * len(blocks)
            tokens: list[int] = []
            x, pos = prompt, 0
            for _s in range(steps):
                h = x
                for i, session in enumerate(sessions):
                    t0 = time.process_time()
                    inputs[i].append(h)
                    h = session.step(h, pos)
                    fps[i].append(make_fingerprint(h))
                    serve[i] += time.process_time() - t0
                    outputs[i].append(h)
                pos += int(x.shape[1])
                tokens.append(int(torch.argmax(h[0, -1])))
                x = torch.tensor([[tokens[-1]]])
            for i, block in enumerate(blocks):
                t0 = time.process_time()
                verdict = check_hop(block, inputs[i], fps[i], tol, tokens=tokens, sent=outputs[i])
                check = time.process_time() - t0
                assert verdict.passed
                full = float("nan")
                if block.is_last:  # the same check with the head over every position
                    t0 = time.process_time()
                    ref = recompute_span(block, inputs[i])
                    check_hop(block, inputs[i], fps[i], tol, tokens=tokens, sent=outputs[i], reference=ref)
                    full = time.process_time() - t0
                if i not in best or check / serve[i] < best[i][1] / best[i][0]:
                    best[i] = (serve[i], check, verdict.positions_recomputed, full)
        for i, block in enumerate(blocks):
            s, c, n, f = best[i]
            print(
                f"{args.model:8s} {steps:5d} {str(block.span):5s} {n:9d} {s:8.2f} {c:8.2f} {c / s:11.3f} "
                f"{f / s:9.3f}",
                flush=True,
            )
        served = sum(v[0] for v in best.values())
        checked = args.verifiers * sum(v[1] for v in best.values())
        positions = sum(v[2] for v in best.values())
        print(
            f"{args.model:8s} {steps:5d} job   {positions:9d} {served:8.2f} {checked:8.2f} {checked / served:11.3f}"
            f"   ({args.verifiers} verifiers a hop: passes x {args.verifiers / steps:.3f}, positions x "
            f"{args.verifiers:.1f}, cpu x {checked / served:.3f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
