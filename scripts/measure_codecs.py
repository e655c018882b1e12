#!/usr/bin/env python
"""Measure the wire codecs on the real SmolLM2-135M split in three blocks (0:10, 10:20, 20:30).

For each codec used between blocks (fp32, fp16, bf16, int8) it greedy-decodes 32 tokens after each of
5 chat prompts, in process, sending every hidden state through ``encode_frame`` / ``decode_frame``,
and reports:

- bytes per token per hop: the mean frame size (header included) of one decode step's hidden state;
- token agreement: the share of generated positions whose token equals the fp32 run's;
- the mean relative L2 error of the decoded hidden states against those sent.

A last row runs the blocks themselves in bfloat16 (fp32 on the wire). Prints a markdown table, as
kept in docs/codecs.md:

    .venv/bin/python scripts/measure_codecs.py                      # imports the packaged SmolLM2 first
    .venv/bin/python scripts/measure_codecs.py --manifest bafkrei…  # reuse a model already in --store
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from shardnet.model.block import Block, load_block  # noqa: E402
from shardnet.model.importer import import_model, smollm2_gguf_path  # noqa: E402
from shardnet.span import LayerSpan  # noqa: E402
from shardnet.store.local import DEFAULT_STORE  # noqa: E402
from shardnet.store.manifest import Manifest, load_manifest, load_tokenizer  # noqa: E402
from shardnet.wire.frames import decode_frame, encode_frame  # noqa: E402

PROMPTS = (
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain in one paragraph what a blockchain is.",
    "List three uses of a paperclip.",
    "How do plants make their food?",
)
SPANS = (LayerSpan(0, 10), LayerSpan(10, 20), LayerSpan(20, 30))
CODECS = ("fp32", "fp16", "bf16", "int8")


@dataclass
class Run:
    """Tokens and wire statistics of one configuration over all prompts."""

    tokens: list[list[int]] = field(default_factory=list)
    hop_bytes: list[int] = field(default_factory=list)
    rel_errors: list[float] = field(default_factory=list)
    max_abs: float = 0.0


def generate(blocks: list[Block], ids: torch.Tensor, n: int, codec: str, run: Run) -> list[int]:
    """Greedy-decode ``n`` tokens, passing every hidden state between blocks through a frame."""
    sessions = [b.new_session(max_length=ids.shape[1] + n) for b in blocks]
    tokens: list[int] = []
    x, pos = ids, 0
    for step in range(n):
        h = x
        for j, session in enumerate(sessions):
            h = session.step(h, pos)
            if j == len(sessions) - 1:
                break
            frame = encode_frame(h, codec)
            decoded = decode_frame(frame)
            sent = h.float()
            run.max_abs = max(run.max_abs, float(sent.abs().max()))
            run.rel_errors.append(float((decoded - sent).norm() / sent.norm().clamp_min(1e-12)))
            if step > 0:  # decode steps carry one token's hidden state per hop
                run.hop_bytes.append(len(frame))
            h = decoded
        pos += x.shape[1]
        token = int(torch.argmax(h[0, -1]))
        tokens.append(token)
        x = torch.tensor([[token]], dtype=torch.int64)
    for session in sessions:
        session.close()
    return tokens


def agreement(a: list[list[int]], b: list[list[int]]) -> float:
    pairs = [(x, y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True)]
    return sum(x == y for x, y in pairs) / len(pairs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--store", type=Path, default=DEFAULT_STORE, help=f"store folder (default {DEFAULT_STORE})"
    )
    parser.add_argument(
        "--manifest", help="manifest CID of SmolLM2 already in --store (default: import it now)"
    )
    parser.add_argument("--tokens", type=int, default=32, help="tokens generated per prompt (default 32)")
    parser.add_argument(
        "--prompts", type=int, default=len(PROMPTS), help=f"prompts used, at most {len(PROMPTS)}"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (default 1; the machine is shared)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)

    if args.manifest:
        cid, manifest = args.manifest, load_manifest(args.store, args.manifest)
    else:
        cid, manifest = import_model(smollm2_gguf_path(), args.store, progress=False)
    print(f"model {manifest.name}, manifest {cid}, blocks {', '.join(map(str, SPANS))}", file=sys.stderr)
    tok = load_tokenizer(args.store, manifest)
    prompts = [
        tok.apply_chat_template(
            [{"role": "user", "content": p}], add_generation_prompt=True, return_tensors="pt"
        )
        for p in PROMPTS[: args.prompts]
    ]
    prompts = [p["input_ids"] if not isinstance(p, torch.Tensor) else p for p in prompts]

    configs = [(f"{c} wire, fp32 blocks", torch.float32, c) for c in CODECS]
    configs.append(("fp32 wire, bf16 blocks", torch.bfloat16, "fp32"))
    runs: dict[str, Run] = {}
    blocks_by_dtype: dict[torch.dtype, list[Block]] = {}
    for label, dtype, codec in configs:
        if dtype not in blocks_by_dtype:
            blocks_by_dtype.clear()
            blocks_by_dtype[dtype] = [load_block(args.store, manifest.to_json(), s, dtype) for s in SPANS]
        run = Run()
        for ids in prompts:
            run.tokens.append(generate(blocks_by_dtype[dtype], ids, args.tokens, codec, run))
        runs[label] = run
        print(f"done: {label}", file=sys.stderr)

    print_table(manifest, runs, args)
    return 0


def print_table(manifest: Manifest, runs: dict[str, Run], args: argparse.Namespace) -> None:
    reference = runs["fp32 wire, fp32 blocks"]
    print(
        f"{manifest.name} in 3 blocks ({', '.join(map(str, SPANS))}), {args.prompts} prompts x {args.tokens} "
        f"greedy tokens, {args.threads} torch thread(s); agreement is against fp32 wire with fp32 blocks.\n"
    )
    print("| configuration | bytes/token/hop | vs fp32 | token agreement | mean rel. error |")
    print("|---|---:|---:|---:|---:|")
    base = sum(reference.hop_bytes) / len(reference.hop_bytes)
    for label, run in runs.items():
        per_hop = sum(run.hop_bytes) / len(run.hop_bytes)
        err = sum(run.rel_errors) / len(run.rel_errors)
        agree = 100 * agreement(run.tokens, reference.tokens)
        print(f"| {label} | {per_hop:.0f} | {per_hop / base:.2f} | {agree:.1f}% | {err:.1e} |")
    print(f"\nLargest |activation| sent between blocks: {reference.max_abs:.0f}.")


if __name__ == "__main__":
    sys.exit(main())
