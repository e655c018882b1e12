"""`shardnet finetune` as a library call: open the route's training sessions, train, evaluate, save the adapter."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from shardnet.errors import ConfigError
from shardnet.finetune.data import Example, batches, make_batch
from shardnet.finetune.ends import ModelEnds
from shardnet.finetune.params import Method, TrainableParams
from shardnet.finetune.spans import LocalSpan, RemoteSpan, SpanRunner
from shardnet.finetune.trainer import Trainer
from shardnet.model.block import load_block_from_parts
from shardnet.span import LayerSpan
from shardnet.wire.eip712 import Domain
from shardnet.wire.json_limits import loads_limited
from shardnet.wire.tickets import MAX_POSITIONS_LIMIT, sign_ticket


@dataclass(frozen=True)
class FinetuneSettings:
    parts_dir: Path  # the folder save_parts wrote, with the model's config.json
    method: Method
    steps: int
    batch_size: int = 8
    lr: float = 1e-3
    rank: int = 4
    prompt_len: int = 8
    seed: int = 0


@dataclass
class FinetuneReport:
    losses: list[float] = field(default_factory=list)
    seconds_per_step: float = 0.0
    accuracy_before: float | None = None
    accuracy_after: float | None = None
    closed: list[dict[str, Any]] = field(default_factory=list)  # each worker's close answer (positions, root)


def read_config(parts_dir: Path) -> dict[str, Any]:
    path = parts_dir / "config.json"
    if not path.is_file():
        raise ConfigError(
            f"{path} is missing: --model names the folder of a model's part files and its config.json"
        )
    config: dict[str, Any] = json.loads(path.read_text())
    return config


def new_trainer(settings: FinetuneSettings) -> Trainer:
    config = read_config(settings.parts_dir)
    ends = ModelEnds(settings.parts_dir, config)
    params = TrainableParams.create(
        ends.config,
        settings.method,
        family=ends.adapter.family,
        num_layers=ends.num_layers,
        rank=settings.rank,
        prompt_len=settings.prompt_len,
        seed=settings.seed,
    )
    return Trainer(ends, params, lr=settings.lr)


async def open_route(
    http: aiohttp.ClientSession,
    urls: Sequence[str],
    signer: Any,
    domain: Domain,
    job_id: int = 0,
    max_positions: int = MAX_POSITIONS_LIMIT,
) -> list[RemoteSpan]:
    """A training session on each worker of `urls` (route order), with tickets `signer` signs.

    `max_positions` bounds the positions (forward + factor x backward) each worker may bill for the job.
    """
    spans = []
    for url in urls:
        async with http.get(f"{url.rstrip('/')}/health") as resp:
            health = loads_limited(await resp.read(), max_bytes=65536, max_depth=4)
        ticket = sign_ticket(
            signer,
            worker=str(health["address"]),
            session_id=uuid.uuid4().hex,
            job_id=job_id,
            max_positions=max_positions,
            span=LayerSpan(*health["span"]),
            expires_at=int(time.time()) + 3600,
            chain_id=domain.chain_id,
            registry=domain.registry,
        )
        spans.append(await RemoteSpan.open(http, url, ticket))
    return spans


def local_route(settings: FinetuneSettings, num_layers: int) -> list[SpanRunner]:
    config = read_config(settings.parts_dir)
    return [LocalSpan(load_block_from_parts(settings.parts_dir, config, LayerSpan(0, num_layers)))]


async def accuracy(trainer: Trainer, spans: Sequence[SpanRunner], examples: list[Example]) -> float:
    hits: list[bool] = []
    for start in range(0, len(examples), 16):
        batch = make_batch(examples[start : start + 16], trainer.params.prompt_len)
        hits += await trainer.exact_match(spans, batch)
    return sum(hits) / len(hits)


async def finetune(
    trainer: Trainer,
    spans: Sequence[SpanRunner],
    settings: FinetuneSettings,
    train: list[Example],
    test: list[Example] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> FinetuneReport:
    """Train `settings.steps` steps through `spans`; exact-match accuracy on `test` before and after."""
    report = FinetuneReport()
    if test:
        report.accuracy_before = await accuracy(trainer, spans, test)
    data = batches(train, settings.batch_size, settings.steps, trainer.params.prompt_len)
    t0 = time.perf_counter()
    for batch in data:
        report.losses.append(await trainer.step(spans, batch))
        if on_step is not None:
            on_step(len(report.losses) - 1, report.losses[-1])
    report.seconds_per_step = (time.perf_counter() - t0) / max(1, settings.steps)
    if test:
        report.accuracy_after = await accuracy(trainer, spans, test)
    return report
