"""The Llama family: Llama, Mistral, Qwen2 and SmolLM2 share one layout.

Layout: `model.embed_tokens`, `model.layers.N` (each called with the rotary `position_embeddings`),
`model.norm` and `lm_head` (tied to the embedding in some checkpoints: the head file keeps its own
copy). Sliding-window layers (Mistral, Qwen2 with `use_sliding_window`) get their own mask.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.cache_utils import Cache

from shardnet.model.adapters.base import DecoderAdapter, register, run_module
from shardnet.span import LayerSpan


@register
class LlamaAdapter(DecoderAdapter):
    family = "llama"
    model_types = ("llama", "mistral", "qwen2")
    architectures = ("LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM")
    base_prefix = "model"
    layers_name = "layers"
    embed_names = ("embed_tokens",)
    head_names = ("norm", "lm_head")

    def embed(self, model: nn.Module, ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return run_module(self.get_module(model, "embed_tokens"), ids)

    def run_layers(
        self,
        model: nn.Module,
        hidden: torch.Tensor,
        span: LayerSpan,
        cache: Cache,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        config = self.config_of(model)
        masks = self.masks(config, hidden, span, cache, position_ids, attention_mask)
        position_embeddings = self.get_module(model, "rotary_emb")(hidden, position_ids=position_ids)
        for i in range(span.start, span.end):
            hidden = run_module(
                self.layer(model, i),
                hidden,
                attention_mask=masks[self.layer_type(config, i)],
                position_embeddings=position_embeddings,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
            )
        return hidden

    def logits(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        hidden = run_module(self.get_module(model, "norm"), hidden)
        return run_module(self.get_module(model, "lm_head"), hidden[:, -1:, :])
