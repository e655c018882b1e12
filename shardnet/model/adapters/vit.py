"""Vision transformers (ViT), run as `ViTForImageClassification` or `ViTModel`.

Layout: `vit.embeddings` (patch projection, CLS token, positions), `vit.layers.N`, `vit.layernorm`
and, for classification, `classifier`. The last block returns the classifier's logits [batch, labels]
(`ViTForImageClassification`) or the normalised last hidden state [batch, patches + 1, hidden]
(`ViTModel`; its pooler is stored in the head file but not run). The first block takes pixel values
[batch, channels, height, width].
"""

from __future__ import annotations

import torch
from torch import nn
from transformers.masking_utils import create_bidirectional_mask

from shardnet.model.adapters.base import EncoderAdapter, register, run_module
from shardnet.span import LayerSpan


@register
class ViTAdapter(EncoderAdapter):
    family = "vit"
    kind = "vision"
    model_types = ("vit",)
    architectures = ("ViTForImageClassification", "ViTModel")
    base_prefix = "vit"
    layers_name = "layers"
    embed_names = ("embeddings",)
    head_names = ("layernorm", "classifier")
    unused_names = ("pooler",)

    def embed(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        embeddings = self.get_module(model, "embeddings")
        pixels = x.to(embeddings.get_parameter("patch_embeddings.projection.weight").dtype)
        return run_module(embeddings, pixels, bool_masked_pos=None, interpolate_pos_encoding=None)

    def run_layers(
        self, model: nn.Module, hidden: torch.Tensor, span: LayerSpan, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        mask = create_bidirectional_mask(
            config=self.config_of(model), inputs_embeds=hidden, attention_mask=attention_mask
        )
        for i in range(span.start, span.end):
            hidden = run_module(self.layer(model, i), hidden, mask)
        return hidden

    def output(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        sequence_output = run_module(self.get_module(model, "layernorm"), hidden)
        if not self.has_module(model, "classifier"):
            return sequence_output
        return run_module(self.get_module(model, "classifier"), sequence_output[:, 0, :])
