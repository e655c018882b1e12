"""Fine-tuning data: JSONL lines of a prompt and its completion, as text or token ids, batched with padding.

    {"prompt": "What is 2 plus 3?", "completion": " ANSWER: 5"}      (text: needs the model's tokenizer)
    {"prompt_ids": [5, 17], "completion_ids": [9, 2]}                   (token ids)

Only the completion's tokens are scored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shardnet.errors import ShardnetError

IGNORE = -100


class DataError(ShardnetError, ValueError):
    """A fine-tuning data file is malformed; the message names the line."""


@dataclass(frozen=True)
class Example:
    prompt: list[int]
    completion: list[int]


@dataclass(frozen=True)
class Batch:
    ids: torch.Tensor  # [batch, n] int64, right-padded with 0
    labels: torch.Tensor  # [batch, prefix + n]: the token each position's logits must predict, else IGNORE


def load_examples(path: str | Path, tokenizer: Any | None = None) -> list[Example]:
    examples: list[Example] = []
    for number, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if "prompt_ids" in row:
                prompt, completion = (
                    [int(t) for t in row["prompt_ids"]],
                    [int(t) for t in row["completion_ids"]],
                )
            else:
                if tokenizer is None:
                    raise DataError(
                        f"{path}:{number}: text examples need the model's tokenizer (--tokenizer DIR)"
                    )
                prompt = list(tokenizer(row["prompt"], add_special_tokens=False)["input_ids"])
                completion = list(tokenizer(row["completion"], add_special_tokens=False)["input_ids"])
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(
                f"{path}:{number}: expected {{'prompt', 'completion'}} or {{'prompt_ids', 'completion_ids'}} ({exc})"
            ) from exc
        if not prompt or not completion:
            raise DataError(f"{path}:{number}: prompt and completion must both be non-empty")
        examples.append(Example(prompt, completion))
    if not examples:
        raise DataError(f"{path} holds no examples")
    return examples


def make_batch(examples: list[Example], prefix: int = 0) -> Batch:
    """Right-padded ids and labels; `prefix` positions (deep prompt) precede every sequence."""
    n = max(len(e.prompt) + len(e.completion) for e in examples)
    ids = torch.zeros(len(examples), n, dtype=torch.int64)
    labels = torch.full((len(examples), prefix + n), IGNORE, dtype=torch.int64)
    for row, e in enumerate(examples):
        seq = e.prompt + e.completion
        ids[row, : len(seq)] = torch.tensor(seq)
        for j in range(len(e.prompt), len(seq)):
            labels[row, prefix + j - 1] = seq[j]  # the logits at position j-1 predict token j
    return Batch(ids, labels)


def batches(examples: list[Example], batch_size: int, steps: int, prefix: int = 0) -> list[Batch]:
    """`steps` batches cycling through `examples` in order (deterministic)."""
    out = []
    for step in range(steps):
        start = step * batch_size
        out.append(make_batch([examples[(start + i) % len(examples)] for i in range(batch_size)], prefix))
    return out
