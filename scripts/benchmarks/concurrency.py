"""`scripts/bench.py concurrency`: many OpenAI API requests at once through SmolLM2 over 3 batching workers.

At each concurrency level, that many chat completions (each a real paid job on anvil, `stream: true`,
exactly --tokens greedy tokens) run at once through the coordinator; prints the aggregate generated
tokens/s, p50/p95 per-token latency (gaps between a stream's chunks), the workers' batch sizes, the
coordinator's coalesced requests, the workers' RSS after the level, and the share of the requests' wall
time the coordinator spent waiting for the chain (registry transactions and reads, from its /health
`chain_wait`); then single-process transformers generating the same prompts one after another in the
same run, and the RSS (current and peak) of every process.

    .venv/bin/python scripts/bench.py concurrency [--levels 1,4,16,64] [--tokens 32] [--threads 1]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import statistics
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.network import PROMPTS, Baseline, stream
from shardnet.cli import PROFILE_ENV
from shardnet.localnet import LocalNetwork
from shardnet.role_process import REPO
from shardnet.span import LayerSpan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the levels this many times, every other round in reverse order, and compare medians "
        "(a shared machine's load then weighs on every level alike; default: 1)",
    )
    parser.add_argument(
        "--levels", default="1,4,16,64", help="comma-separated concurrency levels (default: 1,4,16,64)"
    )
    parser.add_argument("--tokens", type=int, default=32, help="tokens generated per request (default: 32)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per worker and baseline (default: 1)"
    )
    parser.add_argument(
        "--batch-window-ms", type=float, default=2.0, help="the workers' --batch-window-ms (default: 2)"
    )
    parser.add_argument(
        "--gather-ms",
        type=float,
        default=None,
        help="the coordinator's --coalesce-gather-ms: how long a worker's queued steps wait for its other live "
        "sessions (lock step; default: the coordinator's own)",
    )
    parser.add_argument("--max-batch", type=int, default=16, help="the workers' --max-batch (default: 16)")
    parser.add_argument(
        "--coalesce-max-steps",
        type=int,
        default=None,
        help="the coordinator's --coalesce-max-steps: most steps in one request to a worker (default: its own)",
    )
    parser.add_argument(
        "--coalesce-in-flight",
        type=int,
        default=None,
        help="the coordinator's --coalesce-in-flight: most requests in flight to one worker (default: its own)",
    )
    parser.add_argument(
        "--device",
        help="the workers' --device: cpu, cuda or cuda:N (default: theirs, auto); the 3 workers share it "
        "(scripts/gpu_check.sh passes cuda)",
    )
    parser.add_argument(
        "--step-timeout-s",
        type=float,
        default=5.0,
        help="the coordinator's --step-timeout-s (default: 5, the coordinator's own default: steps beyond "
        "--max-positions-in-flight queue in the coordinator, where it does not run)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="write a cProfile of each process's main thread (the coordinator's event loop) into this folder "
        "(SHARDNET_PROFILE_DIR) and print the coordinator's top functions at the end",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=REPO / ".shardnet" / "bench-concurrency",
        help="scratch folder (wiped)",
    )


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of process `pid` in MiB."""
    status = Path(f"/proc/{pid}/status").read_text()
    found = {k: int(v) / 1024 for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(\d+) kB", status, re.M)}
    return found.get("VmRSS", 0.0), found.get("VmHWM", 0.0)


def coordinator_health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url}/health", timeout=10) as resp:
        return dict(json.loads(resp.read()))


def chain_seconds(health: dict[str, Any]) -> dict[str, float]:
    """Seconds waited per registry function ("tx name" / "read name") from a coordinator's /health."""
    return {
        f"{kind} {name}": float(seconds)
        for kind, calls in health["chain_wait"].items()
        for name, (_count, seconds) in calls.items()
    }


def timed_stream(api: object, model: str, prompt: str, n: int) -> tuple[list[float], float, float]:
    """`stream`, with the time the request ended (its stream closed: the output saved, settleJobs to follow)."""
    arrivals, t0, _text = stream(api, model, prompt, n)
    return arrivals, t0, time.perf_counter()


def batch_metrics(url: str) -> tuple[int, float, float, float]:
    """(batched forwards, steps in them, compute-thread seconds in forwards, seconds finishing steps)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()

    def value(pattern: str) -> float:
        found = re.search(pattern + r" (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    return (
        int(value(r"^shardnet_worker_batch_size_count")),
        value(r"^shardnet_worker_batch_size_sum"),
        value(r'^shardnet_worker_compute_seconds_total\{part="forward"\}'),
        value(r'^shardnet_worker_compute_seconds_total\{part="finish"\}'),
    )


def run(args: argparse.Namespace) -> int:
    import openai

    from shardnet.model.importer import smollm2_gguf_path

    levels = [int(v) for v in args.levels.split(",") if v.strip()]
    top = max(levels)
    gguf = smollm2_gguf_path()
    shutil.rmtree(args.work_dir, ignore_errors=True)
    where = args.device if args.device and args.device.startswith("cuda") else "cpu"
    print(f"baseline: single-process transformers on {where}, {args.threads} threads ...", flush=True)
    base = Baseline(gguf, args.threads, device=where)
    base.run("warm up", 4)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        os.environ[PROFILE_ENV] = str(args.profile.resolve())
    with LocalNetwork.start(args.work_dir) as net:
        model_id, _cid, manifest = net.import_model(gguf, price_wei=10**9)
        room = str(top + 8)
        coord = net.start_coordinator(
            extra=("--verify-share", "0", "--max-concurrent-jobs", room, "--api-queue-size", room,
                   "--api-queue-wait-s", "600", "--step-timeout-s", str(args.step_timeout_s),
                   *(("--coalesce-gather-ms", str(args.gather_ms)) if args.gather_ms is not None else ()),
                   *(("--coalesce-max-steps", str(args.coalesce_max_steps)) if args.coalesce_max_steps else ()),
                   *(("--coalesce-in-flight", str(args.coalesce_in_flight)) if args.coalesce_in_flight else ()))
        )  # fmt: skip
        spans = [LayerSpan(0, 10), LayerSpan(10, 20), LayerSpan(20, 30)]
        worker_flags = ("--max-sessions", room, "--max-sessions-per-coordinator", room,
                        "--batch-window-ms", str(args.batch_window_ms), "--max-batch", str(args.max_batch))  # fmt: skip
        workers = [
            net.add_worker(
                i,
                model_id,
                s,
                threads=args.threads,
                extra=worker_flags,
                device=args.device,
                sharing=len(spans),
            )
            for i, s in enumerate(spans)
        ]
        for w in workers:
            health = w.wait_healthy(timeout=600)
            budget = health.get("memory", {}).get("budget_bytes", 0) / 2**20
            print(
                f"{w.name}: {health.get('device')} {health.get('dtype')}, sessions' budget {budget:.0f} MiB"
            )
        coord.wait_healthy(timeout=120)
        net.wait_for_workers(coord, len(workers), timeout=120)
        api = openai.OpenAI(base_url=coord.url + "/v1", api_key="unused", max_retries=0, timeout=1200)
        stream(api, manifest.name, "warm up", 4)

        rows = []
        # each round runs the levels in turn (every other round in reverse order), so that a level does not
        # get all the quiet or all the busy minutes of a shared machine; the summary takes medians per level
        order = [lv for r in range(args.rounds) for lv in (levels if r % 2 == 0 else levels[::-1])]
        for level in order:
            before = [batch_metrics(w.url) for w in workers]
            health0 = coordinator_health(coord.url)
            prompts = [PROMPTS[i % len(PROMPTS)] for i in range(level)]
            # no garbage collection in the clients while a level runs (as timeit): with torch loaded here, each
            # full collection took 0.1-0.4 s, 35-48 of them in a 16-session level, stalling every client thread
            # and taking CPU from the roles measured; what the level left is collected after it
            gc.freeze()
            gc.disable()
            t0 = time.perf_counter()
            try:
                with ThreadPoolExecutor(max_workers=level) as pool:
                    futures = [pool.submit(timed_stream, api, manifest.name, p, args.tokens) for p in prompts]
                    results, errors = [], []
                    for f in futures:
                        try:
                            results.append(f.result())
                        except Exception as exc:  # counted and shown: a level must run without errors
                            errors.append(f"{type(exc).__name__}: {exc}")
                wall = time.perf_counter() - t0
            finally:
                gc.enable()
                gc.unfreeze()
                gc.collect()
            gaps = [
                (b - a) * 1000
                for arrivals, _, _ in results
                for a, b in zip(arrivals, arrivals[1:], strict=False)
            ]
            after = [batch_metrics(w.url) for w in workers]
            health1 = coordinator_health(coord.url)
            batches = [(a[0] - b[0], a[1] - b[1]) for a, b in zip(after, before, strict=True)]
            mean_batch = [f"{s / c:.1f}" if c else "-" for c, s in batches]
            busy = [(a[2] - b[2], a[3] - b[3]) for a, b in zip(after, before, strict=True)]
            tps = len(results) * args.tokens / wall
            rows.append((level, tps, percentile(gaps, 0.5), percentile(gaps, 0.95), len(errors), wall))
            print(
                f"concurrency {level:3d}: {tps:7.2f} tokens/s aggregate, per-token p50 {rows[-1][2]:7.1f} ms "
                f"p95 {rows[-1][3]:7.1f} ms, {len(errors)} errors, {wall:.1f} s; mean batch per worker "
                f"{', '.join(mean_batch)}",
                flush=True,
            )
            print(
                "  workers' compute thread, forward / finishing steps (encode, hash, fingerprint, record): "
                + ", ".join(f"{f:.1f} / {g:.1f} s ({100 * (f + g) / wall:.0f}% busy)" for f, g in busy)
            )
            c0, c1 = health0["step_coalescing"] or {}, health1["step_coalescing"] or {}
            if c1:
                requests, steps = c1["requests"] - c0["requests"], c1["steps"] - c0["steps"]
                print(
                    f"  coordinator: {steps} steps in {requests} requests to workers ({steps / max(requests, 1):.1f} per request), "
                    f"{c1.get('gathered', 0) - c0.get('gathered', 0)} held back gathering"
                )
            waited0, waited1 = chain_seconds(health0), chain_seconds(health1)
            waited = {k: v - waited0.get(k, 0.0) for k, v in waited1.items() if v - waited0.get(k, 0.0) > 0}
            request_time = sum(end - start for _, start, end in results) or float("nan")
            slowest = sorted(waited.items(), key=lambda kv: -kv[1])[:5]
            print(
                f"  chain: {sum(waited.values()):.2f} s waited over {request_time:.1f} request-seconds = "
                f"{100 * sum(waited.values()) / request_time:.1f}% of the requests' wall time "
                f"(transactions {sum(v for k, v in waited.items() if k.startswith('tx ')):.2f} s); "
                + ", ".join(f"{k} {v:.2f} s" for k, v in slowest)
            )
            print(
                "  RSS workers: "
                + ", ".join(f"{rss_mb(w.popen.pid)[0]:.0f}" for w in workers)
                + f" MiB (peaks {', '.join(f'{rss_mb(w.popen.pid)[1]:.0f}' for w in workers)}), coordinator "
                f"{rss_mb(coord.popen.pid)[0]:.0f} MiB",
                flush=True,
            )
            firsts = [(arrivals[0] - start) * 1000 for arrivals, start, _ in results if arrivals]
            tails = [(end - arrivals[-1]) * 1000 for arrivals, _, end in results if arrivals]
            print(
                f"  first token after the request: p50 {percentile(firsts, 0.5):.0f} ms, max "
                f"{max(firsts, default=float('nan')):.0f} ms; last token to the stream's end: p50 "
                f"{percentile(tails, 0.5):.0f} ms, max {max(tails, default=float('nan')):.0f} ms",
                flush=True,
            )
            for e in errors[:3]:
                print(f"  error: {e}")

        base_steps: list[float] = []
        t0 = time.perf_counter()
        for p in PROMPTS[: min(top, len(PROMPTS))]:
            steps, _ttft, _text = base.run(p, args.tokens)
            base_steps += steps
        base_wall = time.perf_counter() - t0
        n_base = min(top, len(PROMPTS))
        print(
            f"single-process transformers on {where}, {n_base} prompts one after another: "
            f"{n_base * args.tokens / base_wall:.2f} tokens/s, per-token p50 {percentile(base_steps, 0.5):.1f} ms "
            f"p95 {percentile(base_steps, 0.95):.1f} ms"
        )
        medians = {
            lv: (
                statistics.median(r[1] for r in rows if r[0] == lv),
                statistics.median(r[2] for r in rows if r[0] == lv),
            )
            for lv in levels
        }
        if 1 in medians:
            one_tps, one_p50 = medians[1]
            for level in levels:
                tps, p50 = medians[level]
                print(
                    f"aggregate throughput at {level} concurrent sessions: {tps / one_tps:.1f}x one session "
                    f"(p50 per-token latency {p50 / one_p50:.1f}x; medians of {args.rounds} round(s))"
                )
        procs = [("coordinator", coord), *[(f"worker {s}", w) for s, w in zip(spans, workers, strict=True)]]
        for name, proc in procs:
            now, peak = rss_mb(proc.popen.pid)
            print(f"RSS {name}: {now:.0f} MiB now, {peak:.0f} MiB peak")
        now, peak = rss_mb(os.getpid())
        print(f"RSS this process (baseline model + clients): {now:.0f} MiB now, {peak:.0f} MiB peak")
    if args.profile is not None:
        print_profiles(args.profile)
    return 0


def print_profiles(folder: Path) -> None:
    import pstats

    for path in sorted(folder.glob("coordinator-*.prof")):
        print(f"cProfile of the coordinator's main thread ({path}), top 25 by own time:")
        pstats.Stats(str(path)).sort_stats("tottime").print_stats(25)
