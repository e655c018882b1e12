"""BERT encoders (e.g. all-MiniLM-L6-v2), run as `BertModel`.

Layout: `embeddings` (word, position and token-type embeddings + LayerNorm), `encoder.layer.N`;
the `pooler` is stored in the head file but not run. The last block returns the last hidden state
[batch, n, hidden], i.e. `BertModel(...).last_hidden_state` (sentence embeddings pool it).
Every block takes the same optional 2D padding mask [batch, n]. Token types are all 0 (single-segment
inputs, as sentence embeddings use); sentence pairs with token_type_ids are not supported.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask

from shardnet.model.adapters.base import EncoderAdapter, register, run_module
from shardnet.span import LayerSpan


@register
class BertAdapter(EncoderAdapter):
    family = "bert"
    kind = "encoder"
    model_types = ("bert",)
    architectures = ("BertModel",)
    base_prefix = "bert"
    layers_name = "encoder.layer"
    embed_names = ("embeddings",)
    head_names = ()
    unused_names = ("pooler",)

    def embed(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return run_module(self.get_module(model, "embeddings"), input_ids=x)

    def run_layers(
        self, model: nn.Module, hidden: torch.Tensor, span: LayerSpan, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        mask = create_bidirectional_mask(
            config=self.config_of(model), inputs_embeds=hidden, attention_mask=attention_mask
        )
        for i in range(span.start, span.end):
            layer = self.layer(model, i)
            hidden = run_module(layer, hidden, mask, None, encoder_attention_mask=None, past_key_values=None)
        return hidden

    def output(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        return hidden
