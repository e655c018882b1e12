#!/usr/bin/env python
"""Steady-state time of one block's decode step, in process, against unsplit transformers on the same device.

SmolLM2 (from the packaged GGUF) split 3x10 like the benchmarks; each block's session is stepped through a
prompt and then `--steps` single-token steps, with the device synchronized around every step, and the
median of the steps after the first few is printed per block, next to transformers' whole-model step. Each
attention backend setting is tried in turn (the default, then with PyTorch's cuDNN / flash / memory-efficient
scaled-dot-product kernels switched off one at a time), and a torch.profiler table of a few steady steps of
the first block shows where a step's time goes. Written to find why a GPU worker's step was 3x slower
than transformers' (docs/gpu.md); runs on the CPU too.

    python scripts/step_timing.py --device cuda --steps 48
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shardnet.model import config_dict, save_parts  # noqa: E402
from shardnet.model.block import Block, load_block_from_parts  # noqa: E402
from shardnet.model.importer import smollm2_gguf_path  # noqa: E402
from shardnet.span import LayerSpan  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_blocks(
    blocks: list[Block], ids: torch.Tensor, steps: int, device: torch.device
) -> list[list[float]]:
    """ms of every step of every block (prompt step first), greedy through the chain."""
    sessions = [b.new_session(max_length=ids.shape[1] + steps + 1) for b in blocks]
    times: list[list[float]] = [[] for _ in blocks]
    x, pos = ids, 0
    try:
        with torch.no_grad():
            for _ in range(steps + 1):
                h = x
                for i, s in enumerate(sessions):
                    sync(device)
                    t0 = time.perf_counter()
                    h = s.step(h, pos)
                    sync(device)
                    times[i].append((time.perf_counter() - t0) * 1000)
                pos += x.shape[1]
                x = torch.tensor([[int(torch.argmax(h[0, -1]))]], dtype=torch.int64)
    finally:
        for s in sessions:
            s.close()
    return times


def time_unsplit(model: torch.nn.Module, ids: torch.Tensor, steps: int, device: torch.device) -> list[float]:
    times: list[float] = []
    with torch.no_grad():
        out = model(input_ids=ids.to(device), use_cache=True)
        past, nxt = out.past_key_values, int(out.logits[0, -1].argmax())
        for _ in range(steps):
            sync(device)
            t0 = time.perf_counter()
            out = model(input_ids=torch.tensor([[nxt]], device=device), past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, int(out.logits[0, -1].argmax())
            sync(device)
            times.append((time.perf_counter() - t0) * 1000)
    return times


def steady(ms: list[float], skip: int = 4) -> float:
    return statistics.median(ms[skip:]) if len(ms) > skip else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: bf16 on a GPU)")
    parser.add_argument("--steps", type=int, default=48, help="decode steps per run (default: 48)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    dtype = (
        getattr(torch, args.dtype)
        if args.dtype
        else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    )
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    ).eval()
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "Explain in a few sentences how a rainbow forms."}],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = tok(prompt, return_tensors="pt").input_ids
    with tempfile.TemporaryDirectory() as parts:
        save_parts(model, model.config, parts)
        cfg = config_dict(model.config)
        blocks = [load_block_from_parts(parts, cfg, LayerSpan(a, a + 10), dtype, device) for a in (0, 10, 20)]
    unsplit = model.to(device=device, dtype=dtype)
    print(
        f"device {device}, dtype {dtype}, prompt {ids.shape[1]} tokens, {args.steps} steps; ms, median of steady steps"
    )
    backends: list[tuple[str, Callable[[bool], None] | None]] = [("default", None)]
    if device.type == "cuda":
        backends += [
            ("cudnn sdp off", torch.backends.cuda.enable_cudnn_sdp),
            ("flash sdp off", torch.backends.cuda.enable_flash_sdp),
            ("mem-efficient sdp off", torch.backends.cuda.enable_mem_efficient_sdp),
        ]
    print(
        f"{'setting':24s} {'block 0:10':>10s} {'10:20':>8s} {'20:30':>8s} {'3 blocks':>9s} {'unsplit 30':>10s} {'first steps 0:10':>18s}"
    )
    for name, switch in backends:
        if switch is not None:
            switch(False)
        try:
            times = time_blocks(blocks, ids, args.steps, device)
            whole = time_unsplit(unsplit, ids, args.steps, device)
            per = [steady(t) for t in times]
            first = ", ".join(f"{v:.1f}" for v in times[0][:3])
            print(
                f"{name:24s} {per[0]:10.2f} {per[1]:8.2f} {per[2]:8.2f} {sum(per):9.2f} {steady(whole):10.2f} {first:>18s}"
            )
        finally:
            if switch is not None:
                switch(True)
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    session = blocks[0].new_session(max_length=ids.shape[1] + 16)
    with torch.no_grad():
        session.step(ids, 0)
        for p in range(4):
            session.step(torch.tensor([[1]]), ids.shape[1] + p)
        sync(device)
        with profile(activities=acts) as prof:
            for p in range(4, 12):
                session.step(torch.tensor([[1]]), ids.shape[1] + p)
            sync(device)
    session.close()
    print("\nprofile of 8 steady steps of block 0:10 (self CPU time):")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18, max_name_column_width=60))


if __name__ == "__main__":
    main()
