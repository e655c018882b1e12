"""The trainable parameters a fine-tuning client holds: LoRA adapters or deep prompts, named as workers expect.

Names follow `shardnet.model.training`: `lora.{layer}.{proj}.A` / `.B` and `prompt.{layer}`; deep prompt
tuning also trains `prompt.input` [p, hidden], the embeddings of the p positions prepended to every sequence.
LoRA starts as in its paper: A random (scaled 1/sqrt(in)), B zero, so the first step runs the base model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from shardnet.model.adapters import ModelError
from shardnet.model.training import LORA_TARGETS
from shardnet.span import LayerSpan

Method = Literal["prompt", "lora"]
INPUT_PROMPT = "prompt.input"


class TrainableParams:
    """Named trainable tensors (nn.Parameters) and what they are for."""

    def __init__(self, method: Method, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
        self.method = method
        self.params = {k: nn.Parameter(v.detach().clone().float()) for k, v in tensors.items()}
        self.meta = dict(meta)
        self.prompt_len = int(self.params[INPUT_PROMPT].shape[0]) if INPUT_PROMPT in self.params else 0

    @classmethod
    def create(
        cls,
        config: Any,
        method: Method,
        *,
        family: str,
        num_layers: int,
        rank: int = 4,
        prompt_len: int = 4,
        seed: int = 0,
    ) -> TrainableParams:
        """Fresh parameters for a model of `num_layers` layers (its HF `config`), from `seed`."""
        gen = torch.Generator().manual_seed(seed)
        hidden = int(config.hidden_size)
        tensors: dict[str, torch.Tensor] = {}
        if method == "lora":
            targets = LORA_TARGETS.get(family)
            if targets is None:
                raise ModelError(
                    f"LoRA is supported for the {', '.join(LORA_TARGETS)} family; use --method prompt"
                )
            heads = int(config.num_attention_heads)
            head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
            kv = int(getattr(config, "num_key_value_heads", heads)) * head_dim
            shapes = {"q_proj": (hidden, heads * head_dim), "k_proj": (hidden, kv), "v_proj": (hidden, kv),
                      "o_proj": (heads * head_dim, hidden)}  # fmt: skip
            for layer in range(num_layers):
                for proj in targets:
                    fan_in, fan_out = shapes[proj]
                    a = torch.randn(rank, fan_in, generator=gen) / fan_in**0.5
                    tensors[f"lora.{layer}.{proj}.A"] = a
                    tensors[f"lora.{layer}.{proj}.B"] = torch.zeros(fan_out, rank)
        elif method == "prompt":
            tensors[INPUT_PROMPT] = torch.randn(prompt_len, hidden, generator=gen) * 0.02
            for layer in range(num_layers):
                tensors[f"prompt.{layer}"] = torch.zeros(prompt_len, hidden)
        else:
            raise ModelError(f"unknown method {method!r}: use prompt or lora")
        return cls(method, tensors, {"method": method, "rank": rank, "prompt_len": prompt_len, "seed": seed})

    def for_span(self, span: LayerSpan) -> dict[str, torch.Tensor]:
        """The tensors a worker serving `span` applies (detached: the worker's gradients come back by name)."""
        return {k: v.detach() for k, v in self.params.items() if _layer(k) in range(span.start, span.end)}

    def save(self, path: str | Path) -> None:
        """Write the parameters as safetensors, with the method and sizes in its metadata."""
        save_file({k: v.detach().contiguous() for k, v in self.params.items()}, str(path),
                  metadata={"shardnet-adapter": json.dumps(self.meta)})  # fmt: skip

    @classmethod
    def load(cls, path: str | Path) -> TrainableParams:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("shardnet-adapter", "{}"))
        if meta.get("method") not in ("prompt", "lora"):
            raise ModelError(
                f"{path} is not an adapter saved by shardnet finetune (no method in its metadata)"
            )
        return cls(meta["method"], load_file(str(path)), meta)


def _layer(name: str) -> int:
    part = name.split(".")[1]
    return int(part) if part.isdigit() else -1
