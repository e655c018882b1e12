"""`scripts/bench.py netns`: SmolLM2-135M over 3 workers on loopback and on the namespace test network with a delay
on every link, beside single-process transformers, in one run (issue 14, item 4).

The namespace network (tests/netns) puts anvil, the coordinator and each worker on a host of its own (a Linux
network namespace on a bridge), behind a proxy that holds every chunk `--delay-ms` each way: each message
between two hosts pays one delay. Each prompt runs on the three back to back (the same load on a shared
machine). Prints the median ms per decoded token and the time to first token of each, their ratios to the
single process, and the per-token bound of the issue: single-process compute + one delay per link traversed
+ 3 ms (relaying, the coordinator sends each hop's step and gets its answer: 2 traversals a hop; pushing,
coordinator -> first worker -> ... -> last -> coordinator: hops + 1). Needs root (namespaces).

    sudo .venv/bin/python scripts/bench.py netns [--tokens 64] [--prompts 3] [--delay-ms 5] [--data-path push]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
from pathlib import Path

from benchmarks.network import PROMPTS, Baseline, add_thread_arguments, stream
from shardnet.localnet import LocalNetwork
from shardnet.role_process import REPO, RoleProcess
from shardnet.span import LayerSpan

SPANS = [LayerSpan(0, 10), LayerSpan(10, 20), LayerSpan(20, 30)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokens", type=int, default=64, help="tokens decoded per prompt (default: 64)")
    parser.add_argument("--prompts", type=int, default=3, help="number of prompts, at most 5 (default: 3)")
    add_thread_arguments(parser)
    parser.add_argument(
        "--delay-ms",
        type=float,
        default=5.0,
        help="one-way delay of every link of the namespace network (default: 5)",
    )
    parser.add_argument(
        "--data-path",
        choices=("relay", "push"),
        default=None,
        help="pass --data-path to both coordinators (default: not passed, the coordinator's own default: relay)",
    )
    parser.add_argument(
        "--work-dir", type=Path, default=REPO / ".shardnet" / "bench-netns", help="scratch folder (wiped)"
    )


def traversals(data_path: str | None, hops: int) -> int:
    """Link traversals on a decoded token's path (see the module docstring)."""
    return hops + 1 if data_path == "push" else 2 * hops


def measure(api_url: str, model: str, text: str, tokens: int) -> tuple[list[float], float, str]:
    """(ms between decoded tokens, time to first token in s, text) of one streamed chat completion."""
    import openai

    api = openai.OpenAI(base_url=api_url + "/v1", api_key="unused", max_retries=0, timeout=600)
    arrivals, t0, out = stream(api, model, text, tokens)
    return [(b - a) * 1000 for a, b in zip(arrivals, arrivals[1:], strict=False)], arrivals[0] - t0, out


def start_workers(net: object, model_id: int, threads: int, **kw: object) -> list[RoleProcess]:
    add = net.add_worker  # type: ignore[attr-defined]
    if kw:  # the namespace network: a host name and a key index per worker
        return [add(f"w{i + 1}", 3 + i, model_id, s, threads=threads, **kw) for i, s in enumerate(SPANS)]
    return [add(i, model_id, s, threads=threads) for i, s in enumerate(SPANS)]


def run(args: argparse.Namespace) -> int:
    from shardnet.model.importer import smollm2_gguf_path
    from tests.netns.netlab import NetLab, unavailable_reason
    from tests.netns.network import NamespaceNetwork

    reason = unavailable_reason()
    if reason is not None:
        print(f"cannot build the namespace network here: {reason}")
        return 2
    gguf = smollm2_gguf_path()
    prompts = PROMPTS[: args.prompts]
    shutil.rmtree(args.work_dir, ignore_errors=True)
    delay_s = args.delay_ms / 1000
    coord_extra: tuple[str, ...] = ("--verify-share", "0")
    if args.data_path:
        coord_extra += ("--data-path", args.data_path)

    print(f"baseline: single-process transformers, {args.threads} threads ...", flush=True)
    base = Baseline(gguf, args.threads)
    base.run("warm up", 4)
    print(
        f"shardnet on loopback and on namespaces with {args.delay_ms:g} ms a link, 3 workers each ...",
        flush=True,
    )
    with (
        NetLab.create() as lab,
        LocalNetwork.start(args.work_dir / "loopback") as loop,
        NamespaceNetwork.start(args.work_dir / "netns", lab, chain_delay_s=delay_s) as ns,
    ):
        loop_model, _cid, manifest = loop.import_model(gguf, price_wei=10**9)
        ns_model, _cid, _manifest = ns.import_model(gguf, price_wei=10**9)
        coords = {
            "loopback": loop.start_coordinator(extra=coord_extra),
            "netns": ns.start_coordinator(delay_s=delay_s, extra=coord_extra),
        }
        workers = start_workers(loop, loop_model, args.worker_threads) + start_workers(
            ns, ns_model, args.worker_threads, delay_s=delay_s
        )
        for w in workers:
            w.wait_healthy(timeout=600)
        for c in coords.values():
            c.wait_healthy(timeout=120)
        loop.wait_for_workers(coords["loopback"], 3, timeout=120)
        ns.wait_for_workers(coords["netns"], 3, timeout=120)
        for c in coords.values():
            measure(c.url, manifest.name, "warm up", 4)  # the first request loads the coordinator's tokenizer

        steps: dict[str, list[float]] = {"single": [], "loopback": [], "netns": []}
        ttfts: dict[str, list[float]] = {"single": [], "loopback": [], "netns": []}
        same = {"loopback": 0, "netns": 0}
        for text in prompts:
            b_steps, b_ttft, b_text = base.run(text, args.tokens)
            steps["single"] += b_steps
            ttfts["single"].append(b_ttft)
            for name, coord in coords.items():
                n_steps, n_ttft, n_text = measure(coord.url, manifest.name, text, args.tokens)
                steps[name] += n_steps
                ttfts[name].append(n_ttft)
                same[name] += n_text == b_text

    med = {k: statistics.median(v) for k, v in steps.items()}
    first = {k: statistics.median(v) * 1000 for k, v in ttfts.items()}
    crossings = traversals(args.data_path, len(SPANS))
    bound = med["single"] + crossings * args.delay_ms + 3
    print()
    print(
        f"SmolLM2-135M-Instruct, fp32, {args.threads} torch threads in the baseline, {args.worker_threads} in each "
        "worker, "
        f"{len(prompts)} chat prompts x {args.tokens} greedy tokens (ignore_eos); data path: "
        f"{args.data_path or 'coordinator default'}"
    )
    print(
        f"outputs equal to single-process transformers: loopback {same['loopback']}/{len(prompts)}, "
        f"namespaces {same['netns']}/{len(prompts)}"
    )
    print(
        f"| figure | single process | shardnet, loopback | shardnet, namespaces, {args.delay_ms:g} ms a link |"
    )
    print("|---|---:|---:|---:|")
    print(
        f"| median ms per decoded token | {med['single']:.1f} | {med['loopback']:.1f} "
        f"({med['loopback'] / med['single']:.2f}x) | {med['netns']:.1f} ({med['netns'] / med['single']:.2f}x) |"
    )
    print(
        f"| time to first token (ms, median) | {first['single']:.0f} | {first['loopback']:.0f} "
        f"({first['loopback'] / first['single']:.2f}x) | {first['netns']:.0f} ({first['netns'] / first['single']:.2f}x) |"
    )
    print(
        f"per-token bound on namespaces (single {med['single']:.1f} + {crossings} traversals x {args.delay_ms:g} ms "
        f"+ 3 ms): {bound:.1f} ms; measured {med['netns']:.1f} ms: {'met' if med['netns'] <= bound else 'NOT met'}"
    )
    print(
        f"the links added {med['netns'] - med['loopback']:.1f} ms a token over loopback "
        f"({crossings} traversals x {args.delay_ms:g} ms = {crossings * args.delay_ms:g} ms expected) and "
        f"{first['netns'] - first['loopback']:.0f} ms to the first token"
    )
    return 0
