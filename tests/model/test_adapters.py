"""Adapters: every state-dict key of every family maps to one part; save_parts writes one file per part."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from safetensors import safe_open

from shardnet.errors import ShardnetError
from shardnet.model import ModelError, get_adapter, part_file_name, save_parts
from tests.fixtures_model import TINY, TINY_LAYERS, TinyModel, build_tiny

pytestmark = pytest.mark.usefixtures("one_thread")

EXPECTED_PARTS = {
    # family: (an embedding key, a key of layer 4, a head key)
    "llama": ("model.embed_tokens.weight", "model.layers.4.mlp.up_proj.weight", "lm_head.weight"),
    "mistral": ("model.embed_tokens.weight", "model.layers.4.self_attn.k_proj.weight", "model.norm.weight"),
    "qwen2": ("model.embed_tokens.weight", "model.layers.4.self_attn.q_proj.bias", "lm_head.weight"),
    "gpt2": ("transformer.wpe.weight", "transformer.h.4.attn.c_attn.weight", "transformer.ln_f.bias"),
    "bert": (
        "embeddings.word_embeddings.weight",
        "encoder.layer.4.output.dense.weight",
        "pooler.dense.weight",
    ),
    "vit": ("vit.embeddings.cls_token", "vit.layers.4.mlp.fc1.weight", "classifier.weight"),
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_every_key_has_exactly_the_expected_part(name: str) -> None:
    model = build_tiny(name)
    adapter = get_adapter(model.config.model_type)
    parts = {key: adapter.key_part(key) for key in model.state_dict()}
    embed_key, layer_key, head_key = EXPECTED_PARTS[name]
    assert parts[embed_key] == "embed"
    assert parts[layer_key] == 4
    assert parts[head_key] == "head"
    layers = {p for p in parts.values() if isinstance(p, int)}
    assert layers == set(range(TINY_LAYERS))
    # every layer holds the same tensors, under its own index
    names_of = [
        sorted(k.replace(f".{i}.", ".N.", 1) for k, p in parts.items() if p == i) for i in sorted(layers)
    ]
    assert all(names == names_of[0] for names in names_of)


@pytest.mark.parametrize(
    ("model_type", "kind", "family"),
    [("llama", "decoder", "llama"), ("mistral", "decoder", "llama"), ("qwen2", "decoder", "llama"),
     ("gpt2", "decoder", "gpt2"), ("bert", "encoder", "bert"), ("vit", "vision", "vit")],
)  # fmt: skip
def test_registry_by_model_type(model_type: str, kind: str, family: str) -> None:
    adapter = get_adapter(model_type)
    assert (adapter.kind, adapter.family) == (kind, family)


def test_unknown_model_type_and_unknown_key_say_what_to_do() -> None:
    # a ShardnetError: the commands print its message instead of a traceback
    with pytest.raises(ShardnetError, match="no adapter for model type 't5'.*known: .*llama"):
        get_adapter("t5")
    with pytest.raises(ModelError, match="no adapter for model type 't5'.*known: .*llama"):
        get_adapter("t5")
    with pytest.raises(ModelError, match="belongs to no part"):
        get_adapter("llama").key_part("model.vision_tower.proj.weight")
    with pytest.raises(ModelError, match="belongs to no part"):
        get_adapter("llama").key_part("model.layers.x.mlp.weight")


@pytest.mark.parametrize("name", sorted(TINY))
def test_save_parts_writes_one_file_per_part_with_hf_names(
    name: str, tiny_models: Callable[[str], TinyModel]
) -> None:
    tiny = tiny_models(name)
    files = sorted(tiny.parts_dir.iterdir())
    expected = [part_file_name("embed"), part_file_name("head")]
    expected += [part_file_name("layer", i) for i in range(TINY_LAYERS)]
    assert sorted(f.name for f in files) == sorted(expected)

    state = tiny.model.state_dict()
    adapter = get_adapter(tiny.model.config.model_type)
    seen: set[str] = set()
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            for key in f.keys():
                part = adapter.key_part(key)
                want = path.name.removesuffix(".safetensors")
                assert (f"layer-{part:03d}" if isinstance(part, int) else part) == want
                assert torch.equal(f.get_tensor(key), state[key])
                seen.add(key)
    assert seen == set(state)


def test_save_parts_returns_part_files_in_order_and_is_deterministic(tmp_path) -> None:
    model = build_tiny("llama")
    first = save_parts(model, model.config, tmp_path / "a")
    again = save_parts(model.state_dict(), model.config.to_dict(), tmp_path / "b")
    assert [(p.name, p.part, p.start, p.end) for p in first] == (
        [("embed.safetensors", "embed", 0, 0)]
        + [(f"layer-{i:03d}.safetensors", "layer", i, i + 1) for i in range(TINY_LAYERS)]
        + [("head.safetensors", "head", TINY_LAYERS, TINY_LAYERS)]
    )
    for a, b in zip(first, again, strict=True):
        assert a.size == a.path.stat().st_size
        assert a.path.read_bytes() == b.path.read_bytes()


def test_tied_head_gets_its_own_copy_of_the_embedding(tmp_path) -> None:
    model = build_tiny("llama")
    assert model.config.tie_word_embeddings
    state = {
        k: v for k, v in model.state_dict().items() if k != "lm_head.weight"
    }  # as save_pretrained drops it
    save_parts(state, model.config, tmp_path)
    with safe_open(str(tmp_path / "head.safetensors"), framework="pt") as f:
        assert sorted(f.keys()) == ["lm_head.weight", "model.norm.weight"]
        assert torch.equal(f.get_tensor("lm_head.weight"), model.model.embed_tokens.weight)


def test_save_parts_casts_to_dtype_and_rejects_a_mismatched_config(tmp_path) -> None:
    model = build_tiny("gpt2")
    files = save_parts(model, model.config, tmp_path / "bf16", dtype=torch.bfloat16)
    with safe_open(str(files[1].path), framework="pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    smaller = model.config.to_dict() | {"n_layer": TINY_LAYERS - 2}
    with pytest.raises(ModelError, match="layer 4, but the config has 4 layers"):
        save_parts(model, smaller, tmp_path / "bad")
