"""The real SmolLM2-135M-Instruct split into 3 blocks of 10 layers generates exactly as the unsplit model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import PreTrainedModel

from shardnet.model import generate_greedy, greedy_generate, load_block_from_parts
from shardnet.span import LayerSpan

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

NEW_TOKENS = 32


def test_three_blocks_generate_32_tokens_bitwise_like_the_unsplit_model(
    smollm2_model: tuple[PreTrainedModel, Any], smollm2_parts: tuple[Path, dict[str, Any], Any]
) -> None:
    model, _ = smollm2_model
    parts_dir, config, tokenizer = smollm2_parts
    assert config["num_hidden_layers"] == 30 and config["tie_word_embeddings"]
    messages = [{"role": "user", "content": "Name three uses of a paperclip."}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt").input_ids

    blocks = [load_block_from_parts(parts_dir, config, LayerSpan(a, a + 10)) for a in (0, 10, 20)]
    middle = blocks[1].parameter_names()
    assert {int(n.split(".")[2]) for n in middle} == set(
        range(10, 20)
    )  # only its layers: no embedding, no head
    assert "lm_head.weight" in blocks[2].parameter_names()
    assert "model.embed_tokens.weight" in blocks[0].parameter_names()

    got = generate_greedy(blocks, ids, NEW_TOKENS)
    expected = greedy_generate(model, ids, NEW_TOKENS)
    text = tokenizer.decode(got.tokens, skip_special_tokens=True)
    assert len(set(got.tokens)) > 8, text  # a real answer, not a repeated token
    assert got.tokens == expected.tokens, (text, tokenizer.decode(expected.tokens))
    assert torch.equal(got.logits, expected.logits)
