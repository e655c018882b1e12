"""`scripts/bench.py network`: SmolLM2-135M split over 3 workers on loopback against single-process transformers, same run.

Prints, for greedy decoding of the same chat prompts (each run on both sides back to back, so that both see the
same load on a shared machine), whether the outputs are equal, and:
- median ms per decoded token and time to first token, for both, and their ratios, for each data path measured
  (`--data-path relay,push`: a coordinator of each mode over the same workers, each prompt run through both);
- the stall when a worker is SIGKILLed mid-generation (a replica serves the same span);
- the gas of one whole job (submit, route, commitments, finalize).

    .venv/bin/python scripts/bench.py network [--tokens 64] [--prompts 3] [--threads N] [--worker-threads N] [--data-path relay,push]

The distributed figures are measured as a client sees them: tokens streamed by the coordinator's
OpenAI-compatible API (`stream: true`), each request a real paid job on chain.
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import signal
import statistics
import time
from pathlib import Path

from shardnet.http_json import request_json
from shardnet.localnet import COORDINATOR, LocalNetwork
from shardnet.role_process import REPO
from shardnet.span import LayerSpan

#: dev accounts of the coordinators, one per data path measured (workers use 3..6, the client 2)
COORDINATOR_KEYS = (COORDINATOR, 9)

PROMPTS = [
    "Explain in a few sentences how a rainbow forms.",
    "Write a short poem about the sea.",
    "List three uses of a paperclip.",
    "What is the difference between a virus and a bacterium?",
    "Describe a good breakfast.",
]


def chat_ids(tok: object, text: str) -> list[int]:
    """The prompt ids the coordinator's chat completions give `text`: chat template, BOS not added twice."""
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": text}],
        tokenize=False,  # type: ignore[attr-defined]
        add_generation_prompt=True,
    )
    bos = getattr(tok, "bos_token", None)
    return list(tok(prompt, add_special_tokens=not (bos and prompt.startswith(bos)))["input_ids"])  # type: ignore[operator]


class Baseline:
    """Single-process transformers, greedy, `n` tokens whatever the model says (as ignore_eos)."""

    def __init__(self, gguf: Path, threads: int, device: str | None = None) -> None:
        """`device` None or cpu: float32 on the CPU; cuda[:N]: the GPU, in the dtype a GPU worker defaults to
        (bfloat16, or float16 where the GPU lacks it), so a GPU network is compared with a GPU process."""
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        torch.set_num_threads(threads)
        self.device = torch.device(device or "cpu")
        dtype = torch.float32
        if self.device.type == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        self.model = (
            AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
            .to(device=self.device, dtype=dtype)
            .eval()
        )
        # this process also runs the benchmark's clients: with torch and transformers loaded, a full garbage
        # collection walks ~0.5 M objects (0.15-0.4 s); the OpenAI client's objects per streamed chunk set off 35 of
        # them in one 16-session level (~10 s of this 2-core machine's CPU, stalling every client thread). Frozen,
        # the loaded heap is never walked again (the roles do the same once started: shardnet.service)
        gc.freeze()

    def run(self, text: str, n: int) -> tuple[list[float], float, str]:
        """(ms per decoded token of every step, time to first token in s, the generated text)."""
        import torch

        steps: list[float] = []
        with torch.no_grad():
            ids = chat_ids(self.tok, text)
            t0 = time.perf_counter()
            out = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=True)
            past, nxt = out.past_key_values, int(out.logits[0, -1].argmax())
            ttft = time.perf_counter() - t0
            tokens = [nxt]
            for _ in range(n - 1):
                t = time.perf_counter()
                out = self.model(
                    input_ids=torch.tensor([[nxt]], device=self.device), past_key_values=past, use_cache=True
                )
                past, nxt = out.past_key_values, int(out.logits[0, -1].argmax())
                steps.append((time.perf_counter() - t) * 1000)
                tokens.append(nxt)
        return steps, ttft, str(self.tok.decode(tokens, skip_special_tokens=True))


def stream(
    api: object, model: str, prompt: str, n: int, on_chunk: object = None
) -> tuple[list[float], float, str]:
    """Stream one chat completion of exactly `n` greedy tokens (ignore_eos, as in vLLM: the model's end of turn does
    not stop it); returns (arrival time of each chunk that carries text, start time, the whole text)."""
    t0 = time.perf_counter()
    arrivals: list[float] = []
    text = ""
    for chunk in api.chat.completions.create(  # type: ignore[attr-defined]
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=n,
        temperature=0,
        stream=True,
        extra_body={"ignore_eos": True},
    ):
        delta = chunk.choices[0].delta.content if chunk.choices else None
        if delta:
            arrivals.append(time.perf_counter())
            text += delta
            if on_chunk is not None:
                on_chunk(len(arrivals), chunk)  # type: ignore[operator]
    if not arrivals:
        raise RuntimeError(f"the coordinator streamed no text for {prompt!r}; see its log")
    return arrivals, t0, text


def job_gas(net: LocalNetwork, from_block: int) -> dict[str, int]:
    """Gas of every registry transaction since `from_block`, by function name."""
    from eth_utils import function_abi_to_4byte_selector

    from shardnet.chain.artifacts import load_artifact

    names = {
        function_abi_to_4byte_selector(e).hex(): e["name"]
        for e in load_artifact().abi
        if e.get("type") == "function"
    }
    w3 = net.devnet.web3()
    gas: dict[str, int] = {}
    for number in range(from_block, w3.eth.block_number + 1):
        block = w3.eth.get_block(number, full_transactions=True)
        for tx in block.transactions:
            if (tx["to"] or "").lower() != net.deployment.registry.lower():
                continue
            receipt = w3.eth.get_transaction_receipt(tx["hash"])
            name = names.get(bytes(tx["input"][:4]).hex(), "?")
            gas[name] = gas.get(name, 0) + int(receipt["gasUsed"])
    return gas


def add_thread_arguments(parser: argparse.ArgumentParser, workers: int = 3) -> None:
    """`--threads` (the single process: every core) and `--worker-threads` (each of `workers` workers: the cores
    shared out, at least 1, as `scripts/demo.py` does), so that neither side oversubscribes the machine."""
    cores = os.cpu_count() or 1
    parser.add_argument(
        "--threads",
        type=int,
        default=cores,
        help=f"torch threads of the single-process baseline (default: the machine's cores, here {cores})",
    )
    parser.add_argument(
        "--worker-threads",
        type=int,
        default=max(1, cores // workers),
        help=f"torch threads of each worker (default: the cores / {workers} workers, at least 1; here "
        f"{max(1, cores // workers)}); {workers} workers of 2 threads on 2 cores run each token ~20%% slower",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tokens", type=int, default=64, help="tokens decoded per prompt (default: 64)")
    parser.add_argument("--prompts", type=int, default=3, help="number of prompts, at most 5 (default: 3)")
    add_thread_arguments(parser)
    parser.add_argument(
        "--data-path",
        default="relay,push",
        help="the coordinators' data paths, comma-separated, each measured on the same workers in one run: relay "
        "(the coordinator relays every hop), push (workers forward; the last answers the coordinator) "
        "(default: relay,push)",
    )
    parser.add_argument(
        "--step-timeout-s",
        type=float,
        default=30.0,
        help="the coordinators' --step-timeout-s (default: 30; a loaded machine's prefill exceeds the service's 5)",
    )
    parser.add_argument(
        "--compact-answers",
        action="store_true",
        help="push mode: the last worker answers greedy steps with its top-16 logits (coordinator --compact-answers)",
    )
    parser.add_argument(
        "--work-dir", type=Path, default=REPO / ".shardnet" / "bench", help="scratch folder (wiped)"
    )


def run(args: argparse.Namespace) -> int:
    import openai

    from shardnet.model.importer import smollm2_gguf_path

    gguf = smollm2_gguf_path()
    prompts = PROMPTS[: args.prompts]
    modes = [m.strip() for m in args.data_path.split(",") if m.strip()]
    if not modes or set(modes) - {"relay", "push"}:
        raise SystemExit(f"--data-path takes relay, push or both (comma-separated), not {args.data_path!r}")
    shutil.rmtree(args.work_dir, ignore_errors=True)

    print(f"baseline: single-process transformers, {args.threads} threads ...", flush=True)
    base = Baseline(gguf, args.threads)
    base.run("warm up", 4)

    print(
        "shardnet: anvil, 3 workers of 10 layers + a replica of layers 10:20, a coordinator ...", flush=True
    )
    with LocalNetwork.start(args.work_dir) as net:
        model_id, _cid, manifest = net.import_model(gguf, price_wei=10**9)
        coords = {
            mode: net.start_coordinator(
                extra=(
                    "--verify-share", "0", "--data-path", mode, "--step-timeout-s", str(args.step_timeout_s),
                    *(("--compact-answers",) if args.compact_answers and mode == "push" else ()),
                ),
                key_index=COORDINATOR_KEYS[i], name=f"coordinator-{mode}",
            )
            for i, mode in enumerate(modes)
        }  # fmt: skip
        spans = [LayerSpan(0, 10), LayerSpan(10, 20), LayerSpan(20, 30), LayerSpan(10, 20)]
        workers = [net.add_worker(i, model_id, s, threads=args.worker_threads) for i, s in enumerate(spans)]
        for w in workers:
            w.wait_healthy(timeout=600)
        apis = {}
        for mode, coord in coords.items():
            coord.wait_healthy(timeout=120)
            net.wait_for_workers(coord, len(workers), timeout=120)
            apis[mode] = openai.OpenAI(
                base_url=coord.url + "/v1", api_key="unused", max_retries=0, timeout=600
            )
        name = manifest.name
        for api in apis.values():
            stream(api, name, "warm up", 4)  # first request loads the tokenizer on the coordinator

        # each prompt runs on both sides back to back, so both see the same load on a shared machine
        steps: dict[str, list[float]] = {mode: [] for mode in modes}
        ttfts: dict[str, list[float]] = {mode: [] for mode in modes}
        same: dict[str, int] = dict.fromkeys(modes, 0)
        base_steps: list[float] = []
        base_ttft: list[float] = []
        base_texts: list[str] = []
        first_block = net.devnet.web3().eth.block_number + 1
        for i, text in enumerate(prompts):
            b_steps, b_ttft, b_text = base.run(text, args.tokens)
            base_steps += b_steps
            base_ttft.append(b_ttft)
            base_texts.append(b_text)
            for mode, api in apis.items():
                arrivals, t0, out = stream(api, name, text, args.tokens)
                same[mode] += out == base_texts[i]
                if out != base_texts[i]:
                    print(f"prompt {i}, {mode}: output differs from single-process transformers:\n  {out!r}\n  "
                          f"{base_texts[i]!r}")  # fmt: skip
                ttfts[mode].append(arrivals[0] - t0)
                steps[mode] += [(b - a) * 1000 for a, b in zip(arrivals, arrivals[1:], strict=False)]
            if i == 0:
                time.sleep(3)  # let the workers' commitments and the finalize land
                gas = job_gas(net, first_block)

        # the stall when the worker serving layers 10:20 dies mid-generation (through the last mode's coordinator)
        kill_mode, coord, api = modes[-1], coords[modes[-1]], apis[modes[-1]]
        killed: dict[str, float] = {}

        def kill_mid(count: int, chunk: object) -> None:
            if count != 12 or killed:
                return
            job_id = int(str(chunk.id).split("-")[1])  # type: ignore[attr-defined]
            route = request_json("GET", f"{coord.url}/v1/jobs/{job_id}")[1]["route"]
            victim = next(h["node"] for h in route if h["span"] == [10, 20])
            for w, _span in zip(workers, spans, strict=True):
                health = request_json("GET", w.url + "/health")[1] or {}
                if str(health.get("address", "")).lower() == victim.lower():
                    w.popen.send_signal(signal.SIGKILL)
                    killed["at"] = time.perf_counter()
                    return

        arrivals, _t0, out = stream(api, name, prompts[0], args.tokens, kill_mid)
        same_after_kill = out == base_texts[0]
        after = [t for t in arrivals if t > killed.get("at", float("inf"))]
        stall = (after[0] - killed["at"]) if after else float("nan")
        normal_gap = statistics.median(steps[kill_mode]) / 1000

    med_base, ttft_base = statistics.median(base_steps), statistics.median(base_ttft)
    print()
    print(
        f"SmolLM2-135M-Instruct, fp32, {args.threads} torch threads in the baseline, {args.worker_threads} in each "
        "worker, "
        f"{len(prompts)} chat prompts x {args.tokens} greedy tokens (ignore_eos)"
    )
    equal = ", ".join(f"{mode} {same[mode]}/{len(prompts)}" for mode in modes)
    print(f"outputs equal to single-process transformers: {equal}, "
          f"and {'also' if same_after_kill else 'NOT'} after the SIGKILL ({kill_mode})")  # fmt: skip
    print(
        "| figure | single process | " + " | ".join(f"shardnet {m}, 3 workers | ratio" for m in modes) + " |"
    )
    print("|---|---:|" + "---:|---:|" * len(modes))
    per_token = [statistics.median(steps[m]) for m in modes]
    print(f"| median ms per decoded token | {med_base:.1f} | "
          + " | ".join(f"{v:.1f} | {v / med_base:.2f}x" for v in per_token) + " |")  # fmt: skip
    first = [statistics.median(ttfts[m]) for m in modes]
    print(f"| time to first token (ms, median) | {ttft_base * 1000:.0f} | "
          + " | ".join(f"{v * 1000:.0f} | {v / ttft_base:.2f}x" for v in first) + " |")  # fmt: skip
    print(
        f"| stall after SIGKILL of a worker mid-generation ({kill_mode}, s) | - | {stall:.2f} | "
        f"{stall / normal_gap:.0f}x a normal step |"
    )
    print()
    print("gas of one whole job (registry transactions, by function):")
    print("| function | gas |")
    print("|---|---:|")
    for fn, g in sorted(gas.items(), key=lambda kv: -kv[1]):
        print(f"| {fn} | {g:,} |")
    print(f"| **total** | **{sum(gas.values()):,}** |")
    return 0
