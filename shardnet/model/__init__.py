"""Model engine: architecture adapters, layer blocks built from per-part safetensors files, KV-cache sessions.

    parts = save_parts(model, model.config, "out/")              # embed, layer-000.., head
    blocks = [load_block_from_parts("out/", config, LayerSpan(a, b)) for a, b in ((0, 10), (10, 30))]
    result = generate_greedy(blocks, ids, 32)                    # result.tokens, result.logits

The names below are imported on first use (PEP 562), so importing one submodule
(say `shardnet.model.importer`) does not import all the others.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Adapter": "shardnet.model.adapters",
    "ModelError": "shardnet.model.adapters",
    "config_from_dict": "shardnet.model.adapters",
    "get_adapter": "shardnet.model.adapters",
    "Block": "shardnet.model.block",
    "load_block": "shardnet.model.block",
    "load_block_from_parts": "shardnet.model.block",
    "PartFile": "shardnet.model.export",
    "config_dict": "shardnet.model.export",
    "part_file_name": "shardnet.model.export",
    "save_parts": "shardnet.model.export",
    "greedy_generate": "shardnet.model.reference",
    "load_reference": "shardnet.model.reference",
    "BlockSession": "shardnet.model.session",
    "Greedy": "shardnet.model.session",
    "SessionPositionError": "shardnet.model.session",
    "check_chain": "shardnet.model.session",
    "generate_greedy": "shardnet.model.session",
}

__all__ = [
    "Adapter",
    "Block",
    "BlockSession",
    "Greedy",
    "ModelError",
    "PartFile",
    "SessionPositionError",
    "check_chain",
    "config_dict",
    "config_from_dict",
    "generate_greedy",
    "get_adapter",
    "greedy_generate",
    "load_block",
    "load_block_from_parts",
    "load_reference",
    "part_file_name",
    "save_parts",
]

if TYPE_CHECKING:
    from shardnet.model.adapters import Adapter, ModelError, config_from_dict, get_adapter
    from shardnet.model.block import Block, load_block, load_block_from_parts
    from shardnet.model.export import PartFile, config_dict, part_file_name, save_parts
    from shardnet.model.reference import greedy_generate, load_reference
    from shardnet.model.session import (
        BlockSession,
        Greedy,
        SessionPositionError,
        check_chain,
        generate_greedy,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'shardnet.model' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
