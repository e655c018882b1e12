"""`scripts/bench.py waterfall`: where a token's time goes, segment by segment, on loopback in push mode.

SmolLM2-135M over 3 workers (10 layers each) and a coordinator (`--data-path push`, verification off), every
process tracing its steps (`shardnet.trace`, `SHARDNET_TRACE`), beside single-process transformers on the same
prompts. For each decoded token, the path from the coordinator's `step` mark to its `token` mark is cut at every
mark in between; the median of each segment over the decoded tokens is printed, then the sums: the model's
forwards, the commitments each hop makes before its output may leave (encode, step hash, fingerprint, Merkle
leaf, the SQLite record), and the rest (HTTP on loopback, the event loops, the coordinator's sampling and
streaming). Their total is a token's time on the network; the single process's is printed beside it.

    .venv/bin/python scripts/bench.py waterfall [--tokens 48] [--prompts 2] [--compact-answers]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
from collections import defaultdict
from pathlib import Path

from benchmarks.netns import SPANS, measure
from benchmarks.network import PROMPTS, Baseline, add_thread_arguments
from shardnet.localnet import LocalNetwork
from shardnet.role_process import REPO
from shardnet.trace import ENV

#: a segment ending at this mark is the model's forward / the hop's commitments
FORWARD, COMMIT = "computed", "finished"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokens", type=int, default=48, help="tokens decoded per prompt (default: 48)")
    parser.add_argument("--prompts", type=int, default=2, help="number of prompts, at most 5 (default: 2)")
    add_thread_arguments(parser)
    parser.add_argument(
        "--compact-answers",
        action="store_true",
        help="the last worker answers with its top-16 logits (coordinator --compact-answers)",
    )
    parser.add_argument(
        "--work-dir", type=Path, default=REPO / ".shardnet" / "bench-waterfall", help="scratch folder (wiped)"
    )


def tokens_of(lines: list[str]) -> list[list[tuple[float, str]]]:
    """The trace cut into decoded tokens: each a list of (time, "<role>.<mark>") from the coordinator's `step`
    to its `token`, roles C (the coordinator) and W1, W2, ... (workers, in the order a token reaches them)."""
    marks = []
    for line in lines:
        t, pid, event = line.split()
        marks.append((float(t), int(pid), event))
    marks.sort()
    coordinator = next((pid for _, pid, event in marks if event == "step"), None)
    tokens: list[list[tuple[float, int, str]]] = []
    current: list[tuple[float, int, str]] | None = None
    for mark in marks:
        if mark[1] == coordinator and mark[2] == "step":
            current = [mark]
            tokens.append(current)
        elif current is not None:
            current.append(mark)
    named = []
    for token in tokens:
        end = next((i for i, (_, pid, e) in enumerate(token) if pid == coordinator and e == "token"), None)
        if end is None:  # the trace ended before this token came back
            continue
        token = token[: end + 1]
        workers: list[int] = []
        for _, pid, event in token:
            if event == "recv" and pid not in workers:
                workers.append(pid)
        role = {coordinator: "C"} | {pid: f"W{i + 1}" for i, pid in enumerate(workers)}
        named.append([(t, f"{role.get(pid, '?')}.{event}") for t, pid, event in token])
    return named


def segments(tokens: list[list[tuple[float, str]]]) -> dict[str, float]:
    """Median ms of each segment "<from> -> <to>" over the tokens whose path has the most common shape."""
    shapes: dict[tuple[str, ...], list[list[tuple[float, str]]]] = defaultdict(list)
    for token in tokens:
        shapes[tuple(name for _, name in token)].append(token)
    if not shapes:
        return {}
    common = max(shapes.values(), key=len)
    out = {}
    for i in range(len(common[0]) - 1):
        name = f"{common[0][i][1]} -> {common[0][i + 1][1]}"
        out[name] = statistics.median((t[i + 1][0] - t[i][0]) * 1000 for t in common)
    # the coordinator between a token and the next token's step (sampling, streaming, the next request)
    between = [
        (b[0][0] - a[-1][0]) * 1000 for a, b in zip(tokens, tokens[1:], strict=False) if b[0][0] > a[-1][0]
    ]
    if between:
        out["C.token -> C.step (the next token's)"] = statistics.median(between)
    return out


def run(args: argparse.Namespace) -> int:
    from shardnet.model.importer import smollm2_gguf_path

    gguf = smollm2_gguf_path()
    shutil.rmtree(args.work_dir, ignore_errors=True)
    args.work_dir.mkdir(parents=True)
    trace_file = args.work_dir / "trace.txt"
    extra = (
        "--verify-share",
        "0",
        "--data-path",
        "push",
        *(("--compact-answers",) if args.compact_answers else ()),
    )
    print(f"baseline: single-process transformers, {args.threads} threads ...", flush=True)
    base = Baseline(gguf, args.threads)
    base.run("warm up", 4)
    single: list[float] = []
    os.environ[ENV] = str(trace_file)  # the roles started below inherit it
    try:
        with LocalNetwork.start(args.work_dir / "net") as net:
            model_id, _cid, manifest = net.import_model(gguf, price_wei=10**9)
            coord = net.start_coordinator(extra=extra)
            workers = [
                net.add_worker(i, model_id, s, threads=args.worker_threads) for i, s in enumerate(SPANS)
            ]
            for w in workers:
                w.wait_healthy(timeout=600)
            coord.wait_healthy(timeout=120)
            net.wait_for_workers(coord, len(workers), timeout=120)
            measure(coord.url, manifest.name, "warm up", 4)
            trace_file.write_text("")  # the measured prompts only
            network: list[float] = []
            for text in PROMPTS[: args.prompts]:
                steps, _ttft, _text = base.run(text, args.tokens)
                single += steps
                steps, _ttft, _text = measure(coord.url, manifest.name, text, args.tokens)
                network += steps
    finally:
        os.environ.pop(ENV, None)
    tokens = tokens_of(trace_file.read_text().splitlines())
    parts = segments(tokens)
    if not parts:
        print("no decoded token in the trace")
        return 1
    print()
    print(
        f"SmolLM2-135M-Instruct, fp32, 3 workers of {args.worker_threads} torch threads, push mode"
        f"{', compact answers' if args.compact_answers else ''}, loopback; {len(tokens)} tokens traced; "
        f"median ms of each segment of a token's path"
    )
    for name, ms in parts.items():
        print(f"{ms:8.2f}  {name}")
    forward = sum(ms for name, ms in parts.items() if name.endswith("." + FORWARD))
    commit = sum(ms for name, ms in parts.items() if name.endswith("." + COMMIT))
    total = sum(parts.values())
    print(f"{forward:8.2f}  the model's forwards")
    print(
        f"{commit:8.2f}  the hops' commitments before their outputs leave (encode, hash, fingerprint, leaf, record)"
    )
    print(f"{total - forward - commit:8.2f}  the rest (HTTP, event loops, the coordinator)")
    print(
        f"{total:8.2f}  a token, step to token on the coordinator (client-side median "
        f"{statistics.median(network):.2f}); single process {statistics.median(single):.2f} "
        f"({args.threads} threads): {total / statistics.median(single):.2f}x"
    )
    return 0
