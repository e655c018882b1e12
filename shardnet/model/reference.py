"""The unsplit Hugging Face model, rebuilt from the same part files, for comparisons with block chains."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from transformers import DynamicCache, PretrainedConfig, PreTrainedModel

from shardnet.model.adapters import ModelError, config_from_dict, get_adapter
from shardnet.model.block import load_tensors, span_files
from shardnet.model.export import part_file_name
from shardnet.model.session import Greedy
from shardnet.span import LayerSpan


def load_reference(
    parts_dir_or_store: str | Path,
    manifest_or_config: Mapping[str, Any] | PretrainedConfig,
    dtype: torch.dtype = torch.float32,
) -> PreTrainedModel:
    """The whole HF model (eval mode) from a `save_parts` folder and its config, or from a store folder
    (files by CID) and the model's manifest (a mapping with "files" and "config")."""
    root = Path(parts_dir_or_store)
    manifest = (
        manifest_or_config
        if isinstance(manifest_or_config, Mapping) and "files" in manifest_or_config
        else None
    )
    config = config_from_dict(manifest["config"] if manifest is not None else manifest_or_config)
    adapter = get_adapter(config.model_type)
    num_layers = adapter.num_layers(config)
    if manifest is not None:
        paths = span_files(manifest["files"], LayerSpan(0, num_layers), num_layers, root)
    else:
        names = [
            part_file_name("embed"),
            *(part_file_name("layer", i) for i in range(num_layers)),
            part_file_name("head"),
        ]
        paths = [root / name for name in names]
    model = adapter.build_model(config)
    load_tensors(model, paths, dtype)
    return model


def greedy_generate(model: PreTrainedModel, ids: torch.Tensor, n: int) -> Greedy:
    """Greedy-decode `n` tokens after `ids` [1, p] with the unsplit model: one prefill, then one token a step,
    logits of the last position only (as `generate` does)."""
    if ids.dim() != 2 or ids.shape[0] != 1:
        raise ModelError(f"greedy_generate takes one prompt of ids [1, p], got {list(ids.shape)}")
    cache = DynamicCache(config=model.config)
    tokens: list[int] = []
    logits: list[torch.Tensor] = []
    x = ids
    with torch.inference_mode():
        for _ in range(n):
            out = model(input_ids=x, past_key_values=cache, use_cache=True, logits_to_keep=1)
            step_logits = out.logits[0, -1].float()
            token = int(torch.argmax(step_logits))
            tokens.append(token)
            logits.append(step_logits)
            x = torch.tensor([[token]], dtype=torch.int64)
    return Greedy(tokens, torch.stack(logits) if logits else torch.empty(0))
