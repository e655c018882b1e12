#!/usr/bin/env python
"""Cheat sweep at library level: jobs through 3 hops, one hop cheating, every hop checked after the fact.

Each job runs step by step (greedy, or sampled from the job's seed); the cheating hop commits the
fingerprint of what it sent. The verifier recomputes every hop of every job in one float32 pass with
one thread, at the tolerance of the dtype the workers declared (shardnet/verify/tolerance.py).

Columns: jobs; corrupted (jobs where the cheat changed something it sent); caught % (of corrupted
jobs, the cheating hop's check failed); honest FP % (honest hops, in every job, whose check failed);
then the extra worker compute of the check AS WIRED (coordinator/disputes.py): each checked hop is
recomputed by the first 2 drawn verifiers, and by every other drawn verifier too (referees: up to
--span-nodes - 1 others) when the first verdict is not innocent; `vrf/hop` is the mean number of
verifier passes per checked hop. Three measures of that extra compute, side by side:
forward passes (verifier passes / decode steps served), positions (positions recomputed by all
verifiers / positions served) and compute seconds (`cpu x`: the process CPU time of one verifier's
pass times the verifiers asked / the process CPU time of serving the job's 3 hops; CPU time, so the
shared machine's load weighs little).
Example (a few minutes on one core):

    python scripts/cheat_sweep.py --models tiny --jobs 100 --steps 24 128

`--wired` checks each hop the way the wired network does (worker/verification.py, coordinator/disputes.py):
a `VerificationPackage` of the frames the hop received, the hashes of the frames it sent and its
fingerprints, under a commitment signed with a dev key, judged by `shardnet.verify.package.judge` (leaves
rebuilt and matched to the signed root; fingerprints only: the token is the coordinator's pick, not
checked). The sweep stays in process: the real processes' path is the same library calls, tested
end to end in tests/coordinator/test_disputes.py and test_faults.py.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from verify_models import VerifyModel, load_model  # noqa: E402

from shardnet.chain.commitments import sign_commitment  # noqa: E402
from shardnet.chain.devnet import DEV_KEYS  # noqa: E402
from shardnet.model.block import Block  # noqa: E402
from shardnet.verify import cheats  # noqa: E402
from shardnet.verify.check import Sampling, check_hop  # noqa: E402
from shardnet.verify.package import StepWork, VerificationPackage, judge  # noqa: E402
from shardnet.verify.sampler import job_seed  # noqa: E402
from shardnet.verify.simulate import HonestHop, Hop, honest_factories, run_job  # noqa: E402
from shardnet.verify.tokens import ShownTokens  # noqa: E402
from shardnet.verify.tolerance import tolerance_for  # noqa: E402
from shardnet.wire.commitment import merkle_root, step_hash  # noqa: E402
from shardnet.wire.eip712 import Domain  # noqa: E402
from shardnet.wire.frames import encode_frame  # noqa: E402

REGISTRY = "0x" + "5a" * 20
FIRST_STAGE = 2  # coordinator.disputes.MIN_VERIFIERS
MAX_VERIFIERS = 16  # coordinator.disputes.MAX_VERIFIERS


@dataclass
class Strategy:
    name: str
    dtype: torch.dtype  # what every worker runs and declares
    hop: int | None  # the cheating hop (None: an honest job)
    make: Callable[[list[Block], int, int], Hop] | None = (
        None  # (blocks, max_length, job seed) -> cheating hop
    )
    threads: int | None = None
    sampled: bool = False


def strategies(subtle_noise: float) -> list[Strategy]:
    mid, last = 1, 2
    return [
        Strategy("honest fp32", torch.float32, None),
        Strategy("honest fp32 2 threads", torch.float32, None, threads=2),
        Strategy("honest bf16", torch.bfloat16, None),
        Strategy("honest fp16", torch.float16, None),
        Strategy("honest bf16 sampled", torch.bfloat16, None, sampled=True),
        Strategy(
            "gross noise",
            torch.float32,
            mid,
            lambda b, n, s: cheats.NoiseHop(HonestHop(b[mid], n), 1.0, seed=s),
        ),
        Strategy(
            f"subtle noise ({subtle_noise:.2g})",
            torch.float32,
            mid,
            lambda b, n, s: cheats.NoiseHop(HonestHop(b[mid], n), subtle_noise, seed=s),
        ),
        Strategy(
            "sparse 1-in-50 gross",
            torch.float32,
            mid,
            lambda b, n, s: cheats.NoiseHop(HonestHop(b[mid], n), 1.0, share=1 / 50, seed=s),
        ),
        Strategy("lazy (no layers)", torch.float32, mid, lambda b, n, s: cheats.LayersHop(b[mid], None, n)),
        Strategy(
            "half layers",
            torch.float32,
            mid,
            lambda b, n, s: cheats.LayersHop(b[mid], cheats.half_layers(b[mid].span), n),
        ),
        Strategy("int8 weights", torch.float32, mid, lambda b, n, s: HonestHop(_int8(b[mid]), n)),
        Strategy(
            "half layers, bf16 worker",
            torch.bfloat16,
            mid,
            lambda b, n, s: cheats.LayersHop(b[mid], cheats.half_layers(b[mid].span), n),
        ),
        Strategy(
            "int8 weights, bf16 worker", torch.bfloat16, mid, lambda b, n, s: HonestHop(_int8(b[mid]), n)
        ),
        Strategy(
            "logit lens (last hop)", torch.float32, last, lambda b, n, s: cheats.LayersHop(b[last], None, n)
        ),
        Strategy(
            "second-best always",
            torch.float32,
            last,
            lambda b, n, s: cheats.SecondBestHop(HonestHop(b[last], n), seed=s),
        ),
        Strategy(
            "second-best 30%",
            torch.float32,
            last,
            lambda b, n, s: cheats.SecondBestHop(HonestHop(b[last], n), 0.3, seed=s),
        ),
        Strategy(
            "second-best always, bf16 worker",
            torch.bfloat16,
            last,
            lambda b, n, s: cheats.SecondBestHop(HonestHop(b[last], n), seed=s),
        ),
    ]


_INT8: dict[int, Block] = {}


def _int8(block: Block) -> Block:
    if id(block) not in _INT8:
        _INT8[id(block)] = cheats.int8_block(block)
    return _INT8[id(block)]


def corrupted(hop: Hop) -> bool:
    """Whether a cheating hop changed anything it sent in this job."""
    steps = getattr(hop, "corrupted_steps", None)
    return True if steps is None else bool(steps)


def audited(share: float, job: int, hop: int) -> bool:
    """Whether hop `hop` of job `job` is checked: a draw with probability `share` (on chain: future randomness)."""
    return share >= 1.0 or random.Random(f"audit:{job}:{hop}").random() < share


def wired_check(
    verifier: Block, hop: Any, job: int, dtype: torch.dtype, shown: ShownTokens | None = None
) -> Any:
    """Judge a hop as the network does: a signed package of what it received, sent and committed (and, on the
    last hop, the tokens the client saw, drawn from the seed of job id job + 1)."""
    from eth_account import Account

    steps = [
        StepWork(
            encode_frame(x, "int64" if not x.dtype.is_floating_point else "fp32"),
            step_hash(encode_frame(out.float(), "fp32")),
            fp,
        )
        for x, out, fp in zip(hop.inputs, hop.outputs, hop.fingerprints, strict=True)
    ]
    domain = Domain(31337, REGISTRY)
    root = merkle_root([s.leaf() for s in steps])
    signed = sign_commitment(
        Account.from_key(DEV_KEYS[3]),
        domain,
        job_id=job + 1,
        span=verifier.span,
        positions=hop.positions,
        steps=len(steps),
        root=root,
    )
    package = VerificationPackage(signed, steps, str(dtype).removeprefix("torch."), shown)
    found = judge(package, domain, verifier)
    if found.tokens is not None and found.tokens.unsupported and not found.guilty:
        return replace(found.verdict, passed=False)  # tokens flagged: the client was shown unsupported text
    return found.verdict


def run_strategy(
    model: VerifyModel,
    strat: Strategy,
    jobs: int,
    steps: int,
    blocks: dict[torch.dtype, list[Block]],
    share: float,
    wired: bool = False,
    span_nodes: int = 5,
) -> dict[str, float]:
    workers = blocks[strat.dtype]
    verifiers = blocks[torch.float32]
    tol = tolerance_for(strat.dtype)
    gen = torch.Generator().manual_seed(99)
    counts = {
        "jobs": 0,
        "corrupted": 0,
        "caught": 0,
        "honest_hops": 0,
        "honest_flagged": 0,
        "served": 0,
        "recomputed": 0,
        "passes_served": 0,
        "passes_checked": 0,
        "hops_checked": 0,
    }
    referees = min(MAX_VERIFIERS, span_nodes - 1)  # every drawn verifier judges once the check escalates
    serve_time = check_time = 0.0
    for job in range(jobs):
        prompt = model.prompt(job, gen)
        max_length = prompt.shape[1] + steps
        factories = honest_factories(workers, max_length, strat.threads)
        made: list[Hop] = []
        if strat.hop is not None and strat.make is not None:
            make = strat.make

            def cheat(
                _i: int,
                job: int = job,
                make: Callable[..., Hop] = make,
                made: list[Hop] = made,
                n: int = max_length,
            ) -> Hop:
                made.append(make(workers, n, job))
                return made[-1]

            factories[strat.hop] = cheat
        # the seed of the job id the wired check signs (job + 1)
        sampling = Sampling(job_seed(31337, REGISTRY, job + 1), 0.8) if strat.sampled else Sampling()
        t0 = time.process_time()
        trace = run_job(factories, prompt, steps, sampling)
        t1 = time.process_time()
        is_corrupt = strat.hop is not None and corrupted(made[0])
        counts["jobs"] += 1
        counts["corrupted"] += int(is_corrupt)
        for i, (verifier, hop) in enumerate(zip(verifiers, trace.hops, strict=True)):
            counts["served"] += hop.positions
            counts["passes_served"] += len(hop.inputs)
            if not audited(share, job, i):
                continue
            c0 = time.process_time()
            if wired:
                shown = None
                if verifier.is_last:
                    temperature = 0.0 if sampling.seed is None else sampling.temperature
                    shown = ShownTokens(trace.tokens, temperature)
                verdict = wired_check(verifier, hop, job, strat.dtype, shown)
            else:
                verdict = check_hop(
                    verifier,
                    hop.inputs,
                    hop.fingerprints,
                    tol,
                    tokens=trace.tokens,
                    sampling=sampling,
                    sent=hop.outputs,
                )
            # one verifier's pass, measured; the first stage's 2, or every drawn verifier after a guilty verdict
            asked = FIRST_STAGE if verdict.passed else max(FIRST_STAGE, referees)
            check_time += asked * (time.process_time() - c0)
            counts["recomputed"] += asked * verdict.positions_recomputed
            counts["passes_checked"] += asked
            counts["hops_checked"] += 1
            if i == strat.hop:
                counts["caught"] += int(is_corrupt and not verdict.passed)
            else:
                counts["honest_hops"] += 1
                counts["honest_flagged"] += int(not verdict.passed)
        serve_time += t1 - t0
    counts["time_ratio"] = check_time / serve_time  # all verifiers' passes over the audited hops / serving
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["tiny"], help="models to sweep: tiny, smollm2")
    parser.add_argument(
        "--jobs",
        type=int,
        nargs="+",
        default=[50],
        help="jobs per strategy, one figure per model (or one for all)",
    )
    parser.add_argument(
        "--steps", type=int, nargs="+", default=[24, 128], help="generated tokens per job; one sweep each"
    )
    parser.add_argument(
        "--share",
        type=float,
        default=1.0,
        help="probability that a hop of a job is checked (1: every hop of every job)",
    )
    parser.add_argument(
        "--span-nodes",
        type=int,
        default=5,
        help="nodes staked on each span (the accused and the others the registry draws from): an escalated check "
        "is judged by min(16, this - 1) verifiers",
    )
    parser.add_argument("--only", nargs="*", help="run only strategies whose name starts with one of these")
    parser.add_argument(
        "--wired",
        action="store_true",
        help="check as the network does: signed packages judged by shardnet.verify.package.judge (no token check)",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    subtle = 3 * tolerance_for("float32").distance
    print(
        f"share of hops checked: {args.share}; subtle noise = 3 x the fp32 tolerance = {subtle:.3g} relative RMS; "
        f"{args.span_nodes} nodes per span: {FIRST_STAGE} verifiers per checked hop, "
        f"{max(FIRST_STAGE, min(MAX_VERIFIERS, args.span_nodes - 1))} when escalated"
    )
    print(
        f"{'model':8s} {'steps':>5s} {'strategy':28s} {'jobs':>5s} {'corrupt':>7s} {'caught%':>7s} {'honestFP%':>9s} "
        f"{'vrf/hop':>7s} {'passes x':>8s} {'pos x':>6s} {'cpu x':>6s}",
        flush=True,
    )
    for m, name in enumerate(args.models):
        model = load_model(name)
        jobs = args.jobs[min(m, len(args.jobs) - 1)]
        blocks = {d: model.blocks(d) for d in (torch.float32, torch.bfloat16, torch.float16)}
        for steps in args.steps:
            for strat in strategies(subtle):
                if args.only and not any(strat.name.startswith(p) for p in args.only):
                    continue
                c = run_strategy(model, strat, jobs, steps, blocks, args.share, args.wired, args.span_nodes)
                caught = f"{100 * c['caught'] / c['corrupted']:.1f}" if c["corrupted"] else "-"
                fp = 100 * c["honest_flagged"] / max(1, c["honest_hops"])
                print(
                    f"{name:8s} {steps:5d} {strat.name:28s} {c['jobs']:5d} {c['corrupted']:7d} {caught:>7s} {fp:9.1f} "
                    f"{c['passes_checked'] / max(1, c['hops_checked']):7.2f} "
                    f"{c['passes_checked'] / c['passes_served']:8.3f} {c['recomputed'] / c['served']:6.2f} "
                    f"{c['time_ratio']:6.3f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
