"""Model engine: architecture adapters, layer blocks built from per-part safetensors files, KV-cache sessions.

    parts = save_parts(model, model.config, "out/")              # embed, layer-000.., head
    blocks = [load_block_from_parts("out/", config, LayerSpan(a, b)) for a, b in ((0, 10), (10, 30))]
    result = generate_greedy(blocks, ids, 32)                    # result.tokens, result.logits
"""

from __future__ import annotations

from shardnet.model.adapters import Adapter, ModelError, config_from_dict, get_adapter
from shardnet.model.block import Block, load_block, load_block_from_parts
from shardnet.model.export import PartFile, config_dict, part_file_name, save_parts
from shardnet.model.reference import greedy_generate, load_reference
from shardnet.model.session import BlockSession, Greedy, SessionPositionError, check_chain, generate_greedy

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
