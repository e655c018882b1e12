"""Architecture adapters, one module per family, registered by Hugging Face `config.model_type`."""

from __future__ import annotations

from shardnet.model.adapters import bert, gpt2, llama, vit  # noqa: F401  (each registers itself)
from shardnet.model.adapters.base import (
    Adapter,
    DecoderAdapter,
    EncoderAdapter,
    Kind,
    ModelError,
    Part,
    config_from_dict,
    get_adapter,
    register,
)

__all__ = [
    "Adapter",
    "DecoderAdapter",
    "EncoderAdapter",
    "Kind",
    "ModelError",
    "Part",
    "config_from_dict",
    "get_adapter",
    "register",
]
