"""The adapter interface: what one architecture family needs to be cut into layer blocks.

An adapter is mostly declarative: which Hugging Face state-dict keys (and modules) belong to the
embedding part, to layer i, and to the head part. From that the base class derives `key_part`
(used to write one file per part) and `build_span` (the HF model on the meta device, pruned to one
span). A family module adds how to call its parts: decoders implement `embed`, `run_layers` and
`logits` (see `DecoderAdapter`), encoders and vision transformers implement `encode` (`EncoderAdapter`).

A new family is one small module that subclasses one of these and decorates it with `@register`.
"""

from __future__ import annotations

import copy
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import torch
import transformers
from accelerate import init_empty_weights
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.cache_utils import Cache

from shardnet.errors import ShardnetError
from shardnet.span import LayerSpan

logger = logging.getLogger(__name__)

Part = Literal["embed", "head"] | int
Kind = Literal["decoder", "encoder", "vision"]


class ModelError(ShardnetError, ValueError):
    """A model, its files or an input to a block does not fit what the block expects."""


class Adapter(ABC):
    """How one architecture family maps onto embedding part, layers and head part.

    Names in `embed_names`, `layers_name` and `head_names` are module paths relative to the HF base
    model (`model.` for Llama, `transformer.` for GPT-2, ...) or, failing that, to the top-level model
    (e.g. `lm_head`). State-dict keys may carry the base prefix or not (`BertModel` has none).
    """

    family: ClassVar[str]
    kind: ClassVar[Kind]
    model_types: ClassVar[tuple[str, ...]]
    architectures: ClassVar[tuple[str, ...]]  # HF classes this adapter runs; the first is the default
    base_prefix: ClassVar[str]  # attribute of the base model inside task models ("model", "vit", ...)
    layers_name: ClassVar[str]  # the ModuleList of layers, e.g. "layers" or "encoder.layer"
    embed_names: ClassVar[tuple[str, ...]]
    head_names: ClassVar[tuple[str, ...]]
    unused_names: ClassVar[tuple[str, ...]] = ()  # head modules that blocks never run (e.g. BERT's pooler)

    # ------------------------------------------------------------------ key -> part
    def key_part(self, name: str) -> Part:
        """The part a state-dict key belongs to: "embed", "head" or the layer index."""
        rel = name.removeprefix(self.base_prefix + ".")
        layer_prefix = self.layers_name + "."
        if rel.startswith(layer_prefix):
            index, _, rest = rel[len(layer_prefix) :].partition(".")
            if index.isdigit() and rest:
                return int(index)
        if any(rel.startswith(p + ".") for p in self.embed_names):
            return "embed"
        if any(rel.startswith(p + ".") for p in self.head_names + self.unused_names):
            return "head"
        raise ModelError(
            f"state-dict key {name!r} belongs to no part of a {self.family} model (embedding, layer or head); "
            f"is this checkpoint of another architecture, or does the {self.family} adapter need this module?"
        )

    # ------------------------------------------------------------------ config
    def num_layers(self, config: PretrainedConfig) -> int:
        return int(config.num_hidden_layers)

    def hidden_size(self, config: PretrainedConfig) -> int:
        return int(config.hidden_size)

    def model_class(self, config: PretrainedConfig) -> type[PreTrainedModel]:
        """The HF class to build: the config's first architecture if this adapter runs it, else the default."""
        names = list(getattr(config, "architectures", None) or [])
        chosen = names[0] if names else self.architectures[0]
        if chosen not in self.architectures:
            raise ModelError(
                f"architecture {chosen} is not supported by the {self.family} adapter "
                f"(supported: {', '.join(self.architectures)}); set config.architectures to one of them"
            )
        model_class = getattr(transformers, chosen, None)
        if not (isinstance(model_class, type) and issubclass(model_class, PreTrainedModel)):
            raise ModelError(
                f"transformers {transformers.__version__} has no model class {chosen}; "
                "install the transformers version in pyproject.toml"
            )
        return model_class

    # ------------------------------------------------------------------ building
    def build_model(self, config: PretrainedConfig) -> PreTrainedModel:
        """The whole HF model in eval mode, parameters on the meta device, buffers real."""
        with init_empty_weights(include_buffers=False):
            model = self.model_class(config)(config)
        model.train(False)  # eval mode (PreTrainedModel.eval is unannotated; train(False) is what it calls)
        return model

    def build_span(self, config: PretrainedConfig, span: LayerSpan) -> PreTrainedModel:
        """The HF model with parameters on the meta device, holding only `span`'s modules.

        Layers stay at their HF names (`model.layers.12...`) in an `nn.ModuleDict`; the embedding is
        kept only by the first block, the final norm and head only by the last. Buffers (rotary
        frequencies, position ids) are real: they are not in the checkpoint.
        """
        num_layers = self.num_layers(config)
        span.check_within(num_layers)
        model = self.build_model(config)
        layers = self.get_module(model, self.layers_name)
        if not isinstance(layers, nn.ModuleList) or len(layers) != num_layers:
            raise ModelError(
                f"{type(model).__name__}.{self.layers_name} is not a list of {num_layers} layers"
            )
        kept = nn.ModuleDict({str(i): layers[i] for i in range(span.start, span.end)})
        self.set_module(model, self.layers_name, kept)
        dropped = list(self.unused_names)
        if not span.is_first():
            dropped += self.embed_names
        if not span.is_last(num_layers):
            dropped += self.head_names
        for name in dropped:
            if self.has_module(model, name):
                self.set_module(model, name, None)
        return model

    def _owner(self, model: nn.Module, name: str) -> tuple[nn.Module, str]:
        base = getattr(model, self.base_prefix, None)
        for root in (base, model):
            if root is None:
                continue
            parent_path, _, attr = name.rpartition(".")
            try:
                parent = root.get_submodule(parent_path) if parent_path else root
            except AttributeError:
                continue
            if attr in parent._modules:
                return parent, attr
        raise ModelError(
            f"the {self.family} adapter expects a module {name!r}; {type(model).__name__} has none"
        )

    def has_module(self, model: nn.Module, name: str) -> bool:
        """Whether `model` (a task model or a base model) has a module slot `name`, held or dropped."""
        try:
            self._owner(model, name)
        except ModelError:
            return False
        return True

    def get_module(self, model: nn.Module, name: str) -> nn.Module:
        parent, attr = self._owner(model, name)
        module = parent._modules[attr]
        if module is None:
            raise ModelError(f"module {name!r} is not held by this block")
        return module

    def set_module(self, model: nn.Module, name: str, module: nn.Module | None) -> None:
        parent, attr = self._owner(model, name)
        parent._modules[attr] = module

    def layer(self, model: nn.Module, index: int) -> nn.Module:
        """Layer `index` of a block built by `build_span` (its layers are an `nn.ModuleDict` by index)."""
        layers = self.get_module(model, self.layers_name)
        if not isinstance(layers, nn.ModuleDict):
            raise ModelError(f"{type(model).__name__}.{self.layers_name} was not built by build_span")
        return layers[str(index)]

    @staticmethod
    def config_of(model: nn.Module) -> PretrainedConfig:
        """The HF config a model carries as `model.config`."""
        config = getattr(model, "config", None)
        if not isinstance(config, PretrainedConfig):
            raise ModelError(
                f"{type(model).__name__} carries no Hugging Face config; build it with build_span"
            )
        return config


class DecoderAdapter(Adapter):
    """A causal LM run step by step with a KV cache."""

    kind: ClassVar[Kind] = "decoder"

    def layer_type(self, config: PretrainedConfig, index: int) -> str:
        """ "full_attention" or "sliding_attention" for layer `index` (as the HF cache and masks see it)."""
        types = getattr(config, "layer_types", None)
        if types:
            return str(types[index])
        return (
            "sliding_attention" if getattr(config, "sliding_window", None) is not None else "full_attention"
        )

    def new_cache(self, config: PretrainedConfig) -> Cache:
        """A cache for all layers of the model; a block fills only its span's (layer_idx is absolute)."""
        from transformers import DynamicCache

        return DynamicCache(config=config)

    @abstractmethod
    def embed(self, model: nn.Module, ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """Token ids [1, n] -> hidden states [1, n, hidden] (first block only)."""

    @abstractmethod
    def run_layers(
        self,
        model: nn.Module,
        hidden: torch.Tensor,
        span: LayerSpan,
        cache: Cache,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the span's layers over hidden [batch, n, hidden] at `position_ids`, updating `cache`.

        `attention_mask` is the HF 2D padding mask [batch, cached + n] of a padded batch
        (`shardnet.model.batched`); None for one sequence."""

    @abstractmethod
    def logits(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm and LM head over the last position: hidden [1, n, hidden] -> logits [1, 1, vocab]."""

    def masks(
        self,
        config: PretrainedConfig,
        hidden: torch.Tensor,
        span: LayerSpan,
        cache: Cache,
        position_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
    ) -> dict[str, Any]:
        """The attention masks of the span's layer types, sized on the first span layer of each type.

        The HF model sizes its masks on the first layer of the whole model; a block's cache holds only
        its own layers, so it must name one of them.
        """
        from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

        makers: Mapping[str, Callable[..., Any]] = {
            "full_attention": create_causal_mask,
            "sliding_attention": create_sliding_window_causal_mask,
        }
        masks: dict[str, Any] = {}
        for i in span_range(span):
            kind = self.layer_type(config, i)
            if kind in masks:
                continue
            if kind not in makers:
                raise ModelError(
                    f"layer {i} has attention type {kind!r}, which the {self.family} adapter cannot run"
                )
            masks[kind] = makers[kind](
                config=config,
                inputs_embeds=hidden,
                attention_mask=attention_mask,
                past_key_values=cache,
                position_ids=position_ids,
                layer_idx=i,
            )
        return masks


class EncoderAdapter(Adapter):
    """A bidirectional encoder (BERT) or vision transformer (ViT): one forward pass, no cache."""

    @abstractmethod
    def embed(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Input ids / pixel values -> hidden states [batch, n, hidden] (first block only)."""

    @abstractmethod
    def run_layers(
        self, model: nn.Module, hidden: torch.Tensor, span: LayerSpan, attention_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Run the span's layers; `attention_mask` is the HF 2D padding mask [batch, n] or None."""

    @abstractmethod
    def output(self, model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
        """The model's output from the last layer's hidden states (documented per family)."""


def run_module(module: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
    """`module(*args, **kwargs)` for a module that returns one tensor (nn.Module's call is typed Any)."""
    output = module(*args, **kwargs)
    if not isinstance(output, torch.Tensor):
        raise ModelError(f"{type(module).__name__} returned {type(output).__name__}, not a tensor")
    return output


def span_range(span: LayerSpan) -> range:
    return range(span.start, span.end)


# ---------------------------------------------------------------------- registry
_REGISTRY: dict[str, Adapter] = {}


def register(cls: type[Adapter]) -> type[Adapter]:
    """Class decorator: make `cls` the adapter of each of its `model_types`."""
    instance = cls()
    for model_type in cls.model_types:
        if model_type in _REGISTRY:
            raise RuntimeError(f"model type {model_type!r} is registered twice ({cls.__name__})")
        _REGISTRY[model_type] = instance
    return cls


def get_adapter(model_type: str) -> Adapter:
    """The adapter for a Hugging Face `config.model_type` (e.g. "llama", "gpt2", "bert", "vit")."""
    try:
        return _REGISTRY[model_type]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ModelError(
            f"no adapter for model type {model_type!r} (known: {known}); "
            "add one module under shardnet/model/adapters/ that registers it"
        ) from None


def config_from_dict(config: Mapping[str, Any] | PretrainedConfig) -> PretrainedConfig:
    """An HF config object from a config dict (as in a manifest); GGUF quantization settings are dropped."""
    if isinstance(config, PretrainedConfig):
        config = config.to_dict()
    data = copy.deepcopy(dict(config))
    data.pop("quantization_config", None)
    model_type = data.get("model_type")
    if not model_type:
        raise ModelError("the model config has no 'model_type'; pass the Hugging Face config.json contents")
    try:
        config_cls = transformers.CONFIG_MAPPING[model_type]
    except KeyError:
        raise ModelError(
            f"transformers {transformers.__version__} knows no model type {model_type!r}"
        ) from None
    return config_cls.from_dict(data)
