"""Importing checkpoints and the packaged GGUF into a content-addressed store."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import LlamaConfig, LlamaForCausalLM

from shardnet.model.adapters import get_adapter
from shardnet.model.importer import ModelImportError, import_model, smollm2_gguf_path
from shardnet.span import LayerSpan
from shardnet.store.cid import cid_of_bytes, cid_of_file
from shardnet.store.manifest import Manifest, load_manifest, load_tokenizer


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def _original_tiny(manifest: Manifest) -> LlamaForCausalLM:
    """The random model of ``tiny_llama_store``, rebuilt from the same config and seed."""
    keys = (
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "max_position_embeddings",
        "tie_word_embeddings",
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**{k: manifest.config[k] for k in keys})).eval()


def test_tiny_llama_import_keeps_every_tensor(tiny_llama_store) -> None:
    store, cid, manifest = tiny_llama_store
    assert (manifest.name, manifest.family, manifest.kind, manifest.architecture) == (
        "tiny-llama",
        "llama",
        "decoder",
        "LlamaForCausalLM",
    )
    assert manifest.num_layers == 4 and manifest.dtype == "float32"
    assert [f.name for f in manifest.files] == [
        "embed.safetensors",
        *[f"layer-{i:03d}.safetensors" for i in range(4)],
        "head.safetensors",
    ]
    assert [(f.part, f.start, f.end) for f in manifest.files] == [
        ("embed", 0, 0),
        *[("layer", i, i + 1) for i in range(4)],
        ("head", 4, 4),
    ]
    assert load_manifest(store, cid) == manifest
    assert cid_of_bytes((store / cid).read_bytes()) == cid == manifest.cid
    adapter = get_adapter("llama")
    seen: dict[str, torch.Tensor] = {}
    for f in manifest.files:
        path = store / f.cid
        assert cid_of_file(path) == f.cid and path.stat().st_size == f.size
        tensors = _tensors(path)
        assert tensors, f.name
        for key in tensors:
            assert adapter.key_part(key) == (f.start if f.part == "layer" else f.part)
        seen.update(tensors)
    original = _original_tiny(manifest).state_dict()
    assert set(seen) == set(original)
    for key, value in original.items():
        assert torch.equal(seen[key], value), key
    assert "quantization_config" not in manifest.config and "_name_or_path" not in manifest.config


def _tiny_checkpoint(root: Path) -> Path:
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    torch.manual_seed(1)
    LlamaForCausalLM(config).save_pretrained(root)
    (root / "tokenizer_config.json").write_text('{"model_max_length": 64}')
    return root


def test_import_is_deterministic_and_dtype_applies(tmp_path: Path) -> None:
    ckpt = _tiny_checkpoint(tmp_path / "ckpt")
    cid_a, man_a = import_model(ckpt, tmp_path / "a", progress=False)
    cid_b, _ = import_model(ckpt, tmp_path / "b", progress=False)
    assert cid_a == cid_b
    assert [t.name for t in man_a.tokenizer] == ["tokenizer_config.json"]
    assert man_a.name == "ckpt"
    # a tied head stores its own copy of the embedding matrix
    head = _tensors(tmp_path / "a" / man_a.part_file("head").cid)
    embed = _tensors(tmp_path / "a" / man_a.part_file("embed").cid)
    assert torch.equal(head["lm_head.weight"], embed["model.embed_tokens.weight"])
    cid_h, man_h = import_model(ckpt, tmp_path / "a", name="tiny-half", dtype="bfloat16", progress=False)
    assert cid_h != cid_a and man_h.dtype == "bfloat16" and man_h.name == "tiny-half"
    layer = _tensors(tmp_path / "a" / man_h.file_for_layer(1).cid)
    assert {t.dtype for t in layer.values()} == {torch.bfloat16}
    # both models live in one store; nothing temporary is left behind
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".tmp")]


def test_import_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ModelImportError, match="does not exist"):
        import_model(tmp_path / "nothing", tmp_path / "s")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelImportError, match="no config.json"):
        import_model(tmp_path / "empty", tmp_path / "s")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelImportError, match="neither a checkpoint folder nor a .gguf"):
        import_model(tmp_path / "weights.bin", tmp_path / "s")
    with pytest.raises(ModelImportError, match="float32, float16, bfloat16"):
        import_model(tmp_path / "empty", tmp_path / "s", dtype="int4")


def test_smollm2_gguf_is_packaged() -> None:
    path = smollm2_gguf_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 90_000_000


@pytest.mark.slow
def test_smollm2_import(smollm2_store) -> None:
    store, cid, manifest = smollm2_store
    assert manifest.name == "SmolLM2-135M-Instruct"
    assert (manifest.num_layers, manifest.family, manifest.architecture) == (30, "llama", "LlamaForCausalLM")
    assert manifest.config["hidden_size"] == 576 and manifest.config["architectures"] == ["LlamaForCausalLM"]
    assert "quantization_config" not in manifest.config
    assert len(manifest.files) == 32
    assert [f.name for f in manifest.files_for(LayerSpan(20, 30))][-1] == "head.safetensors"
    head = _tensors(store / manifest.part_file("head").cid)
    assert head["lm_head.weight"].shape == (49152, 576)
    tok = load_tokenizer(store, manifest)
    assert tok.decode(tok("The capital of France is").input_ids) == "The capital of France is"
    assert {t.name for t in manifest.tokenizer} >= {"tokenizer.json", "tokenizer_config.json"}


def test_blocks_loaded_from_the_store_match_the_original_model(tiny_llama_store) -> None:
    from shardnet.model import generate_greedy, load_block

    store, _, manifest = tiny_llama_store
    original = _original_tiny(manifest)
    blocks = [load_block(store, manifest.to_json(), span) for span in (LayerSpan(0, 1), LayerSpan(1, 4))]
    ids = torch.tensor([[5, 17, 42, 99, 3]])
    result = generate_greedy(blocks, ids, 6)
    with torch.inference_mode():
        expected = original.generate(ids, max_new_tokens=6, min_new_tokens=6, do_sample=False)[
            0, ids.shape[1] :
        ].tolist()
        first_logits = original(ids).logits[0, -1]
    assert result.tokens == expected
    torch.testing.assert_close(result.logits[0], first_logits, rtol=1e-4, atol=1e-4)


def test_loading_options_in_tokenizer_config_do_not_change_the_cid(tmp_path: Path) -> None:
    """Issue 12 item 10: transformers records how a tokenizer was loaded (HF_HUB_OFFLINE gives local_files_only);
    such keys are dropped, so the CID depends only on the model."""
    import json
    import shutil

    plain = _tiny_checkpoint(tmp_path / "plain")
    offline = tmp_path / "offline"
    shutil.copytree(plain, offline)
    config = json.loads((offline / "tokenizer_config.json").read_text())
    config.update({"local_files_only": True, "name_or_path": str(offline), "cache_dir": "/root/.cache"})
    (offline / "tokenizer_config.json").write_text(json.dumps(config))
    cid_plain, _ = import_model(plain, tmp_path / "s1", name="tiny", progress=False)
    cid_offline, manifest = import_model(offline, tmp_path / "s2", name="tiny", progress=False)
    assert cid_plain == cid_offline
    stored = json.loads((tmp_path / "s2" / manifest.tokenizer[0].cid).read_bytes())
    assert stored == {"model_max_length": 64}


def test_importing_a_model_already_stored_is_incremental(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shardnet.model.importer as importer

    ckpt = _tiny_checkpoint(tmp_path / "ckpt")
    store = tmp_path / "store"
    cid, manifest = import_model(ckpt, store, progress=False)

    def no_load(*_args: object) -> None:
        raise AssertionError("the weights were loaded again")

    with monkeypatch.context() as m:
        m.setattr(importer, "_load_folder", no_load)
        assert import_model(ckpt, store, progress=False)[0] == cid  # nothing loaded, nothing written
        with pytest.raises(AssertionError, match="loaded again"):  # another dtype is another import
            import_model(ckpt, store, dtype="bfloat16", progress=False)
    # a file missing from the store makes the import run again and restore it
    layer = store / manifest.file_for_layer(0).cid
    layer.chmod(0o644)
    layer.unlink()
    assert import_model(ckpt, store, progress=False)[0] == cid
    assert cid_of_file(layer) == manifest.file_for_layer(0).cid
