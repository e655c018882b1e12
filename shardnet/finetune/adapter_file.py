"""A trained LoRA adapter as inference uses it: content-addressed, checked against a model, cut by span.

The file is what `shardnet finetune` saves (safetensors of `lora.{layer}.{proj}.A` [r, in] / `.B` [out, r]).
Its CID is `0x` + keccak256 of the file's bytes. A worker serving layers [a, b) gets only the tensors of
those layers, re-serialised (`part`): deterministic bytes, so the worker's stated hash can be checked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
from eth_utils import keccak
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from shardnet.errors import ShardnetError
from shardnet.model.training import LORA_TARGETS
from shardnet.span import LayerSpan

_LORA_NAME = re.compile(r"lora\.(\d+)\.([a-z_]+)\.(A|B)")
MAX_RANK = 256


class AdapterError(ShardnetError):
    """An adapter file that cannot serve a model (not safetensors, not LoRA, wrong shapes, NaN)."""


def adapter_cid(data: bytes) -> str:
    """The adapter's content address: 0x + keccak256 of the file's bytes."""
    return "0x" + keccak(data).hex()


class AdapterFile:
    """A parsed LoRA adapter file: its CID and float32 tensors by name."""

    def __init__(self, data: bytes) -> None:
        try:
            tensors = load_safetensors(data)
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise AdapterError(f"the adapter is not a safetensors file ({exc})") from exc
        if not tensors:
            raise AdapterError("the adapter file holds no tensors")
        for name, tensor in tensors.items():
            if _LORA_NAME.fullmatch(name) is None:
                raise AdapterError(
                    f"adapter tensor {name!r} is not a LoRA half (lora.<layer>.<proj>.A/B): only LoRA "
                    "adapters are served in inference (train with --method lora)"
                )
            if not tensor.dtype.is_floating_point or not bool(torch.isfinite(tensor).all()):
                raise AdapterError(f"adapter tensor {name!r} must be float and finite (no NaN/inf)")
        self.cid = adapter_cid(data)
        self.size = len(data)
        self.tensors = {k: v.float() for k, v in tensors.items()}

    def check_model(self, config: Mapping[str, Any], num_layers: int, family: str = "llama") -> None:
        """Raise AdapterError unless every tensor fits a layer and projection of the model (`config`: HF)."""
        targets = LORA_TARGETS.get(family, ())
        hidden = int(config["hidden_size"])
        heads = int(config["num_attention_heads"])
        head_dim = int(config.get("head_dim") or hidden // heads)
        kv = int(config.get("num_key_value_heads") or heads) * head_dim
        shapes = {"q_proj": (hidden, heads * head_dim), "k_proj": (hidden, kv), "v_proj": (hidden, kv),
                  "o_proj": (heads * head_dim, hidden)}  # fmt: skip
        ranks: dict[tuple[int, str], dict[str, int]] = {}
        for name, tensor in self.tensors.items():
            match = _LORA_NAME.fullmatch(name)
            assert match is not None
            layer, proj, half = int(match[1]), match[2], match[3]
            if layer >= num_layers or proj not in targets:
                raise AdapterError(
                    f"{name}: the model has layers 0..{num_layers - 1} and LoRA targets {', '.join(targets)}"
                )
            fan_in, fan_out = shapes[proj]
            r = int(tensor.shape[0] if half == "A" else tensor.shape[-1])
            want = [r, fan_in] if half == "A" else [fan_out, r]
            if list(tensor.shape) != want or not 0 < r <= MAX_RANK:
                raise AdapterError(
                    f"{name} has shape {list(tensor.shape)}, the model needs {want} (rank 1..{MAX_RANK}): "
                    "this adapter was trained for another model"
                )
            ranks.setdefault((layer, proj), {})[half] = r
        for (layer, proj), halves in ranks.items():
            if set(halves) != {"A", "B"} or halves["A"] != halves["B"]:
                raise AdapterError(f"lora.{layer}.{proj} needs both A and B of one rank, got {halves}")

    def for_span(self, span: LayerSpan) -> dict[str, torch.Tensor]:
        """The tensors of layers [span.start, span.end)."""
        return {k: v for k, v in self.tensors.items() if span.start <= int(k.split(".")[1]) < span.end}

    def part(self, span: LayerSpan) -> bytes:
        """The safetensors bytes a worker serving `span` is sent (empty: no tensor of its layers)."""
        tensors = self.for_span(span)
        return save_safetensors({k: v.contiguous() for k, v in sorted(tensors.items())}) if tensors else b""
