"""The ends of a model a fine-tuning client holds itself: the embedding and the final norm and LM head."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from shardnet.model.adapters import DecoderAdapter, ModelError, config_from_dict, get_adapter
from shardnet.model.adapters.base import run_module
from shardnet.model.block import load_tensors
from shardnet.model.export import part_file_name
from shardnet.span import LayerSpan


class ModelEnds:
    """Embedding and head of a decoder, frozen, from the parts folder `save_parts` wrote."""

    def __init__(self, parts_dir: str | Path, config: Mapping[str, Any]) -> None:
        self.config = config_from_dict(config)
        adapter = get_adapter(self.config.model_type)
        if not isinstance(adapter, DecoderAdapter):
            raise ModelError(f"fine-tuning runs decoder models, not a {adapter.kind} model")
        self.adapter = adapter
        self.num_layers = adapter.num_layers(self.config)
        self.hidden_size = adapter.hidden_size(self.config)
        module = adapter.build_span(self.config, LayerSpan(0, self.num_layers))
        adapter.set_module(module, adapter.layers_name, nn.ModuleDict())  # the layers stay on the workers
        folder = Path(parts_dir)
        load_tensors(
            module, [folder / part_file_name("embed"), folder / part_file_name("head")], torch.float32
        )
        for p in module.parameters():
            p.requires_grad_(False)
        self.module = module

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids [batch, n] -> input hidden states [batch, n, hidden]."""
        return self.adapter.embed(self.module, ids, torch.arange(ids.shape[1]).unsqueeze(0))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm and LM head over every position: [batch, n, hidden] -> [batch, n, vocab]."""
        normed = run_module(self.adapter.get_module(self.module, self.adapter.head_names[0]), hidden)
        return run_module(self.adapter.get_module(self.module, self.adapter.head_names[-1]), normed)
