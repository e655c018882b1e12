"""GPT-2: learned absolute positions added on the first block.

Layout: `transformer.wte` + `transformer.wpe`, `transformer.h.N`, `transformer.ln_f` and `lm_head`
(tied to `wte`; the head file keeps its own copy).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.cache_utils import Cache

from shardnet.model.adapters.base import DecoderAdapter, register, run_module
from shardnet.span import LayerSpan


@register
class GPT2Adapter(DecoderAdapter):
    family = "gpt2"
    model_types = ("gpt2",)
    architectures = ("GPT2LMHeadModel",)
    base_prefix = "transformer"
    layers_name = "h"
    embed_names = ("wte", "wpe")
    head_names = ("ln_f", "lm_head")

    def embed(self, model: nn.Module, ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        inputs_embeds = run_module(self.get_module(model, "wte"), ids)
        position_embeds = run_module(self.get_module(model, "wpe"), position_ids)
        return run_module(self.get_module(model, "drop"), inputs_embeds + position_embeds)

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
        for i in range(span.start, span.end):
            hidden = run_module(
                self.layer(model, i),
                hidden,
                cache,
                masks[self.layer_type(config, i)],
                None,  # encoder_hidden_states
                encoder_attention_mask=None,
                use_cache=True,
                position_ids=position_ids,
            )
        return hidden

    def logits(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        hidden = run_module(self.get_module(model, "ln_f"), hidden)
        return run_module(self.get_module(model, "lm_head"), hidden[:, -1:, :])
