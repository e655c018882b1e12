"""`shardnet finetune`: train LoRA adapters or deep prompts of a model whose frozen layers run on workers."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

from shardnet.cli.chain_args import add_chain_flags


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "finetune",
        help="fine-tune a model through remote layer blocks (the adapter is trained and saved here)",
        description="Train LoRA adapters (attention projections) or deep prompts: this process holds the "
        "embeddings, the head and the trainable parameters; the workers of --worker run the frozen layers "
        "forward and backward. See docs/finetune.md.",
    )
    p.add_argument(
        "--model", type=Path, required=True, help="folder of the model's part files and config.json"
    )
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="JSONL of {prompt, completion} or {prompt_ids, completion_ids}",
    )
    p.add_argument("--method", choices=("prompt", "lora"), required=True, help="deep prompt tuning or LoRA")
    p.add_argument("--steps", type=int, required=True, help="optimizer steps to take")
    p.add_argument("--batch-size", type=int, default=8, help="sequences per step (default 8)")
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--rank", type=int, default=4, help="LoRA rank (default 4)")
    p.add_argument("--prompt-len", type=int, default=8, help="deep prompt length in positions (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the trainable parameters' initialisation")
    p.add_argument("--tokenizer", type=Path, help="folder of the model's tokenizer (needed for text data)")
    p.add_argument(
        "--eval", type=Path, help="JSONL of held-out examples: exact-match accuracy before and after"
    )
    p.add_argument("--out", type=Path, default=Path("adapter.safetensors"), help="where to save the adapter")
    p.add_argument(
        "--worker", action="append", default=[], metavar="URL",
        help="a worker's URL, once per span in route order; none: train in this process (loads every layer)",
    )  # fmt: skip
    p.add_argument("--job-id", type=int, default=0, help="the paid job the tickets name (default 0: unpaid)")
    p.add_argument(
        "--coordinator", metavar="URL",
        help="the paid job's coordinator: it routes and tickets the job (--job-id, your client key) and settles it "
        "from the workers' signed commitments after training; no coordinator key needed",
    )  # fmt: skip
    add_chain_flags(
        p,
        needs_key=False,
        key_note=" (with --worker: an approved coordinator's key, the ticket signer; with --coordinator: the job's "
        "client key)",
    )
    p.set_defaults(func=cmd_finetune)


def cmd_finetune(args: argparse.Namespace) -> int:
    from shardnet.errors import ConfigError
    from shardnet.finetune.data import load_examples
    from shardnet.finetune.run import FinetuneSettings, finetune, local_route, new_trainer

    if args.steps < 1 or args.batch_size < 1:
        raise ConfigError("--steps and --batch-size must be at least 1")
    settings = FinetuneSettings(args.model, args.method, args.steps, args.batch_size, args.lr, args.rank,
                                args.prompt_len, args.seed)  # fmt: skip
    tokenizer = _tokenizer(args.tokenizer)
    train = load_examples(args.data, tokenizer)
    test = load_examples(args.eval, tokenizer) if args.eval else None
    trainer = new_trainer(settings)

    async def run() -> Any:
        import aiohttp

        from shardnet.finetune.run import open_route

        if args.coordinator:
            return await _paid(args, settings, trainer, train, test)
        if not args.worker:
            return await finetune(
                trainer, local_route(settings, trainer.ends.num_layers), settings, train, test
            ), []
        registry = _registry(args)
        async with aiohttp.ClientSession() as http:
            spans = await open_route(http, args.worker, registry.account, registry.domain(), args.job_id)
            try:
                report = await finetune(trainer, spans, settings, train, test)
            finally:
                closed = [await s.close() for s in spans]
        return report, closed

    report, closed = asyncio.run(run())
    for i, loss in enumerate(report.losses):
        print(f"step {i:4d}  loss {loss:.6f}")
    print(f"{report.seconds_per_step:.3f} s per step")
    if report.accuracy_before is not None:
        print(f"exact match: {report.accuracy_before:.3f} before, {report.accuracy_after:.3f} after")
    for answer in closed:
        print(f"worker: {answer.get('positions')} positions to be paid (forward {answer.get('forward_positions')}, "
              f"backward {answer.get('backward_positions')} x {answer.get('backward_factor')})")  # fmt: skip
    trainer.params.save(args.out)
    print(f"adapter saved to {args.out}")
    if args.coordinator:
        return _settle(args, closed)
    return 0


async def _paid(args: argparse.Namespace, settings: Any, trainer: Any, train: Any, test: Any) -> Any:
    """Train a paid job on the route and tickets its coordinator hands out (the adapter is settled after saving)."""
    import aiohttp

    from shardnet.errors import ConfigError
    from shardnet.finetune.paid import open_paid_route
    from shardnet.finetune.run import finetune

    if args.job_id < 1 or args.worker:
        raise ConfigError(
            "--coordinator needs --job-id N of a paid job (shardnet submit/pay) and no --worker"
        )
    account = _registry(args, "--coordinator needs the job's client key").account
    async with aiohttp.ClientSession() as http:
        spans = await open_paid_route(http, args.coordinator, account, args.job_id)
        try:
            report = await finetune(trainer, spans, settings, train, test)
        finally:
            closed = [await s.close() for s in spans]
    return report, closed


def _settle(args: argparse.Namespace, closed: list[dict[str, Any]]) -> int:
    import aiohttp
    from eth_utils import keccak

    from shardnet.finetune.paid import settle_paid_job

    account = _registry(args, "--coordinator needs the job's client key").account

    async def settle() -> dict[str, Any]:
        async with aiohttp.ClientSession() as http:
            output = keccak(args.out.read_bytes())
            return await settle_paid_job(http, args.coordinator, account, args.job_id, closed, output)

    answer = asyncio.run(settle())
    print(f"job {args.job_id} settled in tx {answer['tx']}: {len(answer['settled'])} workers paid")
    for hop in answer["left_out"]:
        print(f"left out {hop['node']}: {hop['reason']} (it may post its own commitment)")
    return 0


def _registry(
    args: argparse.Namespace, need: str = "--worker needs tickets: pass the key of an approved coordinator"
) -> Any:
    from shardnet.cli.chain_args import registry_from_args
    from shardnet.errors import ConfigError

    registry = registry_from_args(args, needs_key=False)
    if registry.account is None:
        raise ConfigError(f"{need} (--key-env VAR or --keystore FILE)")
    return registry


def _tokenizer(folder: Path | None) -> Any:
    if folder is None:
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))
