"""Write a model as one safetensors file per part: embedding, each layer, head.

`save_parts` is what the importer calls to publish a model; `load_block_from_parts` reads its folder.
Tensor names inside the files are the Hugging Face state-dict names of the transformers version in use.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file
from transformers import PretrainedConfig

from shardnet.model.adapters import Adapter, ModelError, config_from_dict, get_adapter

logger = logging.getLogger(__name__)

PartName = Literal["embed", "layer", "head"]


@dataclass(frozen=True)
class PartFile:
    """One written part. Layer i covers [i, i+1); the embedding [0, 0); the head [L, L) for L layers."""

    name: str  # file name inside the output folder, e.g. "layer-003.safetensors"
    part: PartName
    start: int
    end: int
    path: Path
    size: int  # bytes


def part_file_name(part: PartName, layer: int | None = None) -> str:
    """The file name of a part: "embed.safetensors", "layer-007.safetensors", "head.safetensors"."""
    if part == "layer":
        if layer is None:
            raise ValueError("a layer part needs its layer index")
        return f"layer-{layer:03d}.safetensors"
    return f"{part}.safetensors"


def config_dict(config: PretrainedConfig | Mapping[str, Any]) -> dict[str, Any]:
    """The JSON-ready config dict that blocks are built from (GGUF quantization settings removed)."""
    return config_from_dict(config).to_dict()


def save_parts(
    model_or_state_dict: torch.nn.Module | Mapping[str, torch.Tensor],
    config: PretrainedConfig | Mapping[str, Any],
    out_dir: str | Path,
    dtype: torch.dtype | None = None,
) -> list[PartFile]:
    """Write `embed.safetensors`, `layer-%03d.safetensors` for each layer and `head.safetensors`.

    A tied LM head gets its own copy of the embedding matrix under the head's key (`lm_head.weight`),
    so the last block never needs the embedding file. Floating tensors are cast to `dtype` if given.
    Returns the files in order: embedding, layers 0..L-1, head. The bytes depend only on the tensors,
    so the same model always gives the same files (and CIDs).
    """
    hf_config = config_from_dict(config)
    adapter = get_adapter(hf_config.model_type)
    num_layers = adapter.num_layers(hf_config)
    state = _state_dict(model_or_state_dict)
    _add_tied_head(state, hf_config, adapter)

    groups: dict[Any, dict[str, torch.Tensor]] = {"embed": {}, "head": {}}
    groups.update({i: {} for i in range(num_layers)})
    for name, tensor in state.items():
        part = adapter.key_part(name)
        if part not in groups:
            raise ModelError(
                f"tensor {name!r} belongs to layer {part}, but the config has {num_layers} layers"
            )
        groups[part][name] = tensor
    empty = [i for i in range(num_layers) if not groups[i]]
    if empty:
        raise ModelError(f"layers {empty} have no tensors in the state dict; does it match the config?")

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = [_write(out, "embed", 0, 0, groups["embed"], dtype)]
    files += [_write(out, "layer", i, i + 1, groups[i], dtype) for i in range(num_layers)]
    files.append(_write(out, "head", num_layers, num_layers, groups["head"], dtype))
    logger.info("wrote %d part files (%.1f MB) to %s", len(files), sum(f.size for f in files) / 1e6, out)
    return files


def _state_dict(source: torch.nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(source, torch.nn.Module):
        return dict(source.state_dict())
    return dict(source)


def _add_tied_head(state: dict[str, torch.Tensor], config: PretrainedConfig, adapter: Adapter) -> None:
    """Give a tied head its own entry (a state dict loaded from a file may lack it)."""
    if not getattr(config, "tie_word_embeddings", False):
        return
    tied = getattr(adapter.model_class(config), "_tied_weights_keys", None) or {}
    for head_key, embed_key in tied.items():
        if head_key not in state and embed_key in state:
            state[head_key] = state[embed_key]


def _write(
    out: Path,
    part: PartName,
    start: int,
    end: int,
    tensors: Mapping[str, torch.Tensor],
    dtype: torch.dtype | None,
) -> PartFile:
    name = part_file_name(part, start if part == "layer" else None)
    path = out / name
    prepared: dict[str, torch.Tensor] = {}
    for key, tensor in tensors.items():
        t = tensor.detach()
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        # one file must not hold two views of one storage; a copy is cheap at one part's size
        prepared[key] = t.contiguous().clone()
    save_file(prepared, str(path), metadata={"format": "pt"})
    return PartFile(name=name, part=part, start=start, end=end, path=path, size=path.stat().st_size)
