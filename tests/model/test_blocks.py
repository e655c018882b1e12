"""Blocks of tiny random models: chains reproduce the unsplit model bitwise, hold only their tensors."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable

import pytest
import torch

from shardnet.model import (
    Block,
    ModelError,
    SessionPositionError,
    generate_greedy,
    get_adapter,
    greedy_generate,
    load_block,
    load_block_from_parts,
    load_reference,
    save_parts,
)
from shardnet.span import LayerSpan
from tests.fixtures_model import DECODERS, ENCODERS, TINY_LAYERS, TinyModel

pytestmark = pytest.mark.usefixtures("one_thread")

SPLITS = {
    "2 blocks": [(0, 3), (3, 6)],
    "3 blocks": [(0, 2), (2, 4), (4, 6)],
    "uneven": [(0, 1), (1, 5), (5, 6)],
}
PROMPT_LEN, NEW_TOKENS = 9, 8  # longer than the tiny Mistral/Qwen2 sliding windows


def _blocks(tiny: TinyModel, spans: list[tuple[int, int]], dtype: torch.dtype = torch.float32) -> list[Block]:
    return [load_block_from_parts(tiny.parts_dir, tiny.config, LayerSpan(a, b), dtype) for a, b in spans]


def _prompt(vocab: int) -> torch.Tensor:
    return torch.randint(0, vocab, (1, PROMPT_LEN), generator=torch.Generator().manual_seed(7))


@pytest.mark.parametrize("split", sorted(SPLITS))
@pytest.mark.parametrize("name", DECODERS)
def test_decoder_chain_equals_unsplit_model_bitwise(
    name: str, split: str, tiny_models: Callable[[str], TinyModel]
) -> None:
    tiny = tiny_models(name)
    ids = _prompt(tiny.model.config.vocab_size)
    expected = greedy_generate(tiny.model, ids, NEW_TOKENS)
    got = generate_greedy(_blocks(tiny, SPLITS[split]), ids, NEW_TOKENS)
    assert len(set(expected.tokens)) > 1  # the random model is not degenerate
    assert got.tokens == expected.tokens
    assert got.logits.dtype == torch.float32
    assert torch.equal(got.logits, expected.logits)


@pytest.mark.parametrize("name", DECODERS)
def test_prefill_in_pieces_equals_one_prefill(name: str, tiny_models: Callable[[str], TinyModel]) -> None:
    tiny = tiny_models(name)
    ids = _prompt(tiny.model.config.vocab_size)
    outs = []
    for pieces in ([ids], [ids[:, :4], ids[:, 4:5], ids[:, 5:]]):
        sessions = [b.new_session() for b in _blocks(tiny, SPLITS["2 blocks"])]
        pos = 0
        for piece in pieces:
            h = piece
            for s in sessions:
                h = s.step(h, pos)
            pos += piece.shape[1]
        assert [s.length for s in sessions] == [PROMPT_LEN, PROMPT_LEN]
        outs.append(h)
    assert outs[0].shape == (1, 1, tiny.model.config.vocab_size)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("split", ["2 blocks", "3 blocks"])
def test_encoder_chain_equals_unsplit_model_bitwise(
    name: str, split: str, tiny_models: Callable[[str], TinyModel]
) -> None:
    tiny = tiny_models(name)
    gen = torch.Generator().manual_seed(3)
    mask = None
    with torch.inference_mode():
        if name == "bert":
            x = torch.randint(0, tiny.model.config.vocab_size, (2, 7), generator=gen)
            mask = torch.ones(2, 7, dtype=torch.int64)
            mask[1, 5:] = 0  # a padded second sequence
            expected = tiny.model(input_ids=x, attention_mask=mask).last_hidden_state
        else:
            x = torch.randn(2, 3, 16, 16, generator=gen)
            expected = tiny.model(pixel_values=x).logits
    h = x
    for block in _blocks(tiny, SPLITS[split]):
        h = block.forward(h, attention_mask=mask)
    assert h.shape == expected.shape
    assert torch.equal(h, expected)


@pytest.mark.parametrize("name", DECODERS + ENCODERS)
def test_blocks_hold_only_their_own_tensors(name: str, tiny_models: Callable[[str], TinyModel]) -> None:
    tiny = tiny_models(name)
    adapter = get_adapter(tiny.model.config.model_type)
    state = tiny.model.state_dict()
    unused = tuple(f"{p}." for p in adapter.unused_names)
    for a, b in SPLITS["3 blocks"]:
        block = load_block_from_parts(tiny.parts_dir, tiny.config, LayerSpan(a, b))
        wanted = (
            set(range(a, b)) | ({"embed"} if a == 0 else set()) | ({"head"} if b == TINY_LAYERS else set())
        )
        expected = {
            k
            for k in state
            if adapter.key_part(k) in wanted
            and not k.removeprefix(adapter.base_prefix + ".").startswith(unused)
        }
        assert block.parameter_names() == expected
        tensors = dict(block.module.named_parameters()) | dict(block.module.named_buffers())
        assert not any(t.is_meta for t in tensors.values())
        for key in expected:
            assert torch.equal(tensors[key], state[key]), key
        assert (block.is_first, block.is_last) == (a == 0, b == TINY_LAYERS)


def test_session_checks_positions_inputs_and_limits(tiny_models: Callable[[str], TinyModel]) -> None:
    tiny = tiny_models("llama")
    first, second = _blocks(tiny, SPLITS["2 blocks"])
    session = first.new_session(max_length=12)
    ids = _prompt(tiny.model.config.vocab_size)
    hidden = session.step(ids, 0)
    assert hidden.shape == (1, PROMPT_LEN, first.hidden_size)
    with pytest.raises(SessionPositionError, match="starts at position 3, but the session holds 9"):
        session.step(ids[:, :1], 3)
    with pytest.raises(ValueError):  # SessionPositionError is a ValueError too
        session.step(ids[:, :1], 10)
    with pytest.raises(ModelError, match="exceed this session's max_length 12"):
        session.step(ids[:, :4], PROMPT_LEN)
    with pytest.raises(ModelError, match="int64 token ids"):
        session.step(hidden[:, :1], PROMPT_LEN)
    with pytest.raises(ModelError, match=r"token ids must lie in \[0, 96\)"):
        session.step(torch.tensor([[96]]), PROMPT_LEN)
    assert session.length == PROMPT_LEN  # refused steps change nothing
    session.step(ids[:, :3], PROMPT_LEN)
    assert session.length == 12
    session.close()
    with pytest.raises(ModelError, match="closed"):
        session.step(ids[:, :1], 12)

    later = second.new_session()
    with pytest.raises(ModelError, match=r"float hidden states \[batch, n>0, 32\]"):
        later.step(ids, 0)
    with pytest.raises(ModelError, match="max_length 1000 exceeds the model's 128 positions"):
        second.new_session(max_length=1000)
    with pytest.raises(ModelError, match="one forward pass"):
        load_block_from_parts(
            tiny_models("bert").parts_dir, tiny_models("bert").config, LayerSpan(0, 2)
        ).new_session()


def test_bf16_blocks_compute_in_bf16_and_return_float32_logits(
    tiny_models: Callable[[str], TinyModel],
) -> None:
    tiny = tiny_models("qwen2")
    blocks = _blocks(tiny, SPLITS["3 blocks"], dtype=torch.bfloat16)
    assert {p.dtype for b in blocks for p in b.module.parameters()} == {torch.bfloat16}
    ids = _prompt(tiny.model.config.vocab_size)
    hidden = blocks[0].new_session().step(ids, 0)
    assert hidden.dtype == torch.bfloat16
    got = generate_greedy(blocks, ids, NEW_TOKENS)
    assert got.logits.dtype == torch.float32
    expected = greedy_generate(
        load_reference(tiny.parts_dir, tiny.config, dtype=torch.bfloat16), ids, NEW_TOKENS
    )
    assert got.tokens == expected.tokens
    assert torch.equal(got.logits, expected.logits)
    fp32 = greedy_generate(tiny.model, ids, NEW_TOKENS)
    assert not torch.equal(got.logits, fp32.logits)  # it really ran in bf16
    torch.testing.assert_close(got.logits[0], fp32.logits[0], rtol=0.1, atol=0.2)


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_load_reference_rebuilds_the_unsplit_model(
    name: str, tiny_models: Callable[[str], TinyModel]
) -> None:
    tiny = tiny_models(name)
    ids = _prompt(tiny.model.config.vocab_size)
    rebuilt = load_reference(tiny.parts_dir, tiny.config)
    assert type(rebuilt) is type(tiny.model)
    assert torch.equal(greedy_generate(rebuilt, ids, 4).logits, greedy_generate(tiny.model, ids, 4).logits)


def test_load_block_from_a_store_by_manifest(tiny_models: Callable[[str], TinyModel], tmp_path) -> None:
    """A store holds files named by content hash; the manifest says which is which."""
    tiny = tiny_models("mistral")
    store = tmp_path / "store"
    store.mkdir()
    files = []
    for part in save_parts(tiny.model, tiny.config, tmp_path / "parts"):
        digest = hashlib.sha256(part.path.read_bytes()).hexdigest()
        shutil.copy(part.path, store / digest)
        files.append(
            {"name": part.name, "part": part.part, "start": part.start, "end": part.end, "cid": digest}
        )
    manifest = {"family": "llama", "num_layers": TINY_LAYERS, "config": tiny.config, "files": files}
    blocks = [load_block(store, manifest, LayerSpan(a, b)) for a, b in SPLITS["uneven"]]
    ids = _prompt(tiny.model.config.vocab_size)
    assert torch.equal(generate_greedy(blocks, ids, 4).logits, greedy_generate(tiny.model, ids, 4).logits)
    assert torch.equal(
        greedy_generate(load_reference(store, manifest), ids, 4).logits,
        greedy_generate(tiny.model, ids, 4).logits,
    )

    (store / files[3]["cid"]).unlink()  # layer 2's file
    with pytest.raises(ModelError, match="is missing; fetch the model's files"):
        load_block(store, manifest, LayerSpan(1, 5))
    without_head = {**manifest, "files": [f for f in files if f["part"] != "head"]}
    with pytest.raises(ModelError, match="lacks files for head"):
        load_block(store, without_head, LayerSpan(5, 6))
    with pytest.raises(ValueError, match="exceeds the model's 6 layers"):
        load_block(store, manifest, LayerSpan(4, 7))


def test_chain_must_cover_the_model(tiny_models: Callable[[str], TinyModel]) -> None:
    tiny = tiny_models("gpt2")
    ids = _prompt(tiny.model.config.vocab_size)
    with pytest.raises(ModelError, match="ends at layer 4 of 6"):
        generate_greedy(_blocks(tiny, [(0, 2), (2, 4)]), ids, 2)
    with pytest.raises(ModelError, match="does not start where the previous one ended"):
        generate_greedy(_blocks(tiny, [(0, 2), (3, 6)]), ids, 2)


def test_blocks_from_a_store_written_by_the_importer(tiny_llama_store) -> None:
    """The importer's real store and manifest (files by CID) load into blocks that match the whole model."""
    store, _, manifest = tiny_llama_store
    data = manifest.to_json()
    blocks = [load_block(store, data, LayerSpan(a, b)) for a, b in [(0, 1), (1, 3), (3, 4)]]
    assert [b.span for b in blocks] == [LayerSpan(0, 1), LayerSpan(1, 3), LayerSpan(3, 4)]
    ids = _prompt(data["config"]["vocab_size"])
    expected = greedy_generate(load_reference(store, data), ids, NEW_TOKENS)
    got = generate_greedy(blocks, ids, NEW_TOKENS)
    assert got.tokens == expected.tokens
    assert torch.equal(got.logits, expected.logits)


def test_a_new_session_fed_the_same_steps_reproduces_outputs_bitwise(
    tiny_models: Callable[[str], TinyModel],
) -> None:
    """Failover: a replacement replays the span's past inputs with their original step boundaries."""
    tiny = tiny_models("llama")
    first, second = _blocks(tiny, SPLITS["2 blocks"])
    ids = _prompt(tiny.model.config.vocab_size)
    steps = [(ids, 0), (ids[:, :1], PROMPT_LEN), (ids[:, 1:2], PROMPT_LEN + 1)]
    inputs = []  # what the second block received
    session = first.new_session()
    for x, pos in steps:
        inputs.append((session.step(x, pos), pos))
    original = second.new_session()
    outputs = [original.step(h, pos) for h, pos in inputs]

    replacement = second.new_session()
    for (h, pos), out in zip(inputs[:-1], outputs[:-1], strict=True):
        assert torch.equal(replacement.step(h, pos), out)
    assert torch.equal(replacement.step(*inputs[-1]), outputs[-1])
