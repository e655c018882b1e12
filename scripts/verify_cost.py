#!/usr/bin/env python
"""Time of checking a hop after the fact vs time of serving it, per hop, on one thread.

Serving: the hop's block session, step by step (prompt prefill, then one position a step), plus the
fingerprint of each output. Checking: `check_hop` (one prefill-style pass over all positions, the
fingerprints compared, the sent tensors re-fingerprinted). Example:

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

from shardnet.verify.check import check_hop  # noqa: E402
from shardnet.verify.fingerprint import make_fingerprint  # noqa: E402
from shardnet.verify.tolerance import tolerance_for  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2", help="tiny or smollm2")
    parser.add_argument("--steps", type=int, nargs="+", default=[24, 128], help="generated tokens per job")
    parser.add_argument("--repeats", type=int, default=2, help="jobs per length (the fastest is kept)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.model)
    blocks = model.blocks()
    tol = tolerance_for("float32")
    gen = torch.Generator().manual_seed(0)
    print(
        f"{'model':8s} {'steps':>5s} {'hop':5s} {'positions':>9s} {'serve s':>8s} {'check s':>8s} {'check/serve':>11s}"
    )
    for steps in args.steps:
        best: dict[int, tuple[float, float, int]] = {}
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
                    t0 = time.perf_counter()
                    inputs[i].append(h)
                    h = session.step(h, pos)
                    fps[i].append(make_fingerprint(h))
                    serve[i] += time.perf_counter() - t0
                    outputs[i].append(h)
                pos += int(x.shape[1])
                tokens.append(int(torch.argmax(h[0, -1])))
                x = torch.tensor([[tokens[-1]]])
            for i, block in enumerate(blocks):
                t0 = time.perf_counter()
                verdict = check_hop(block, inputs[i], fps[i], tol, tokens=tokens, sent=outputs[i])
                check = time.perf_counter() - t0
                assert verdict.passed
                if i not in best or check / serve[i] < best[i][1] / best[i][0]:
                    best[i] = (serve[i], check, verdict.positions_recomputed)
        for i, block in enumerate(blocks):
            s, c, n = best[i]
            print(
                f"{args.model:8s} {steps:5d} {str(block.span):5s} {n:9d} {s:8.2f} {c:8.2f} {c / s:11.3f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
