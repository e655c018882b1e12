"""Blocks on a device (shardnet.model.device): weights and KV caches on it, inputs and outputs on the CPU.

The device is $SHARDNET_TEST_DEVICE (default cpu; `scripts/gpu_check.sh` sets cuda where a GPU is present).
On the CPU float32 blocks equal the unsplit model bitwise; on a GPU they match the CPU float32 reference
within `TOLERANCE` (rtol, atol) of their dtype, which also bounds half precision on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import PreTrainedModel

from shardnet.devices import DeviceError
from shardnet.model import Block, generate_greedy, greedy_generate, load_block_from_parts
from shardnet.model.batched import step_many
from shardnet.model.device import (
    CPU,
    choose_dtype,
    device_budget_bytes,
    machine_device,
    preferred_dtypes,
    resolve_device,
)
from shardnet.model.training import span_backward
from shardnet.span import LayerSpan
from shardnet.verify.check import recompute_span
from shardnet.verify.fingerprint import make_fingerprint
from tests.fixtures_model import DECODERS, TinyModel

pytestmark = pytest.mark.usefixtures("one_thread")

SPANS = [(0, 2), (2, 5), (5, 6)]
PROMPT_LEN, NEW_TOKENS = 9, 8
#: (rtol, atol) of a block's logits against the CPU float32 reference, per weight dtype
TOLERANCE = {torch.float32: (1e-4, 1e-4), torch.float16: (0.05, 0.1), torch.bfloat16: (0.1, 0.2)}
CUDA0 = torch.device("cuda", 0)


def _blocks(tiny: TinyModel, device: torch.device, dtype: torch.dtype = torch.float32) -> list[Block]:
    return [
        load_block_from_parts(tiny.parts_dir, tiny.config, LayerSpan(a, b), dtype, device) for a, b in SPANS
    ]


def _prompt(vocab: int, n: int = PROMPT_LEN, seed: int = 7) -> torch.Tensor:
    return torch.randint(0, vocab, (1, n), generator=torch.Generator().manual_seed(seed))


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index or 0) == (b.index or 0)


# ---------------------------------------------------------------------- blocks on the test device
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", DECODERS)
def test_decoder_chain_on_the_device_matches_the_reference(
    name: str, dtype: torch.dtype, tiny_models: Callable[[str], TinyModel], model_device: torch.device
) -> None:
    tiny = tiny_models(name)
    blocks = _blocks(tiny, model_device, dtype)
    for block in blocks:
        assert block.device == model_device
        assert all(_same_device(p.device, model_device) for p in block.module.parameters())
        assert {p.dtype for p in block.module.parameters()} == {dtype}
    ids = _prompt(tiny.model.config.vocab_size)
    expected = greedy_generate(tiny.model, ids, NEW_TOKENS)  # unsplit, CPU, float32
    got = generate_greedy(blocks, ids, NEW_TOKENS)
    assert got.logits.device == CPU and got.logits.dtype == torch.float32
    rtol, atol = TOLERANCE[dtype]
    if dtype == torch.float32:
        assert got.tokens == expected.tokens
        if model_device == CPU:
            assert torch.equal(got.logits, expected.logits)
        else:
            torch.testing.assert_close(got.logits, expected.logits, rtol=rtol, atol=atol)
    else:  # later steps may follow another token: the prompt's logits are compared
        assert not torch.equal(got.logits[0], expected.logits[0])  # it really ran in half precision
        torch.testing.assert_close(got.logits[0], expected.logits[0], rtol=rtol, atol=atol)


@pytest.mark.parametrize("name", ["llama", "gpt2"])
def test_kv_caches_live_on_the_device_and_outputs_on_the_cpu(
    name: str, tiny_models: Callable[[str], TinyModel], model_device: torch.device
) -> None:
    tiny = tiny_models(name)
    first, middle, last = _blocks(tiny, model_device)
    sessions = [b.new_session() for b in (first, middle, last)]
    h = _prompt(tiny.model.config.vocab_size)
    for session in sessions:
        h = session.step(h, 0)
        assert h.device == CPU  # what a worker encodes: never on the device
        cache = session.cache
        assert cache is not None
        span = session.block.span
        for layer in range(span.start, span.end):
            keys = cache.layers[layer].keys
            assert keys is not None and _same_device(keys.device, model_device)
            assert int(keys.shape[-2]) == PROMPT_LEN
    assert h.shape == (1, 1, tiny.model.config.vocab_size) and h.dtype == torch.float32


@pytest.mark.parametrize("name", ["llama", "qwen2", "gpt2"])
def test_batched_decode_on_the_device_gives_each_session_its_tokens_alone(
    name: str, tiny_models: Callable[[str], TinyModel], model_device: torch.device
) -> None:
    tiny = tiny_models(name)
    blocks = _blocks(tiny, model_device)
    vocab = tiny.model.config.vocab_size
    prompts = [_prompt(vocab, n, seed=n) for n in (1, 4, 9, 3)]
    alone = [generate_greedy(blocks, p, 5).tokens for p in prompts]
    chains = [[b.new_session() for b in blocks] for _ in prompts]
    tokens: list[list[int]] = [[] for _ in prompts]
    inputs, positions = list(prompts), [0] * len(prompts)
    for _ in range(5):
        hidden = list(inputs)
        for depth in range(len(blocks)):
            outs = step_many([c[depth] for c in chains], hidden, positions)
            assert all(isinstance(o, torch.Tensor) and o.device == CPU for o in outs), outs
            hidden = [o for o in outs if isinstance(o, torch.Tensor)]
        for i, out in enumerate(hidden):
            positions[i] += int(inputs[i].shape[1])
            tokens[i].append(int(torch.argmax(out[0, -1])))
            inputs[i] = torch.tensor([[tokens[i][-1]]])
    assert tokens == alone


def test_training_pass_on_the_device_matches_the_cpu(
    tiny_models: Callable[[str], TinyModel], model_device: torch.device
) -> None:
    tiny = tiny_models("llama")
    span = LayerSpan(2, 5)
    on_cpu = load_block_from_parts(tiny.parts_dir, tiny.config, span)
    on_device = load_block_from_parts(tiny.parts_dir, tiny.config, span, torch.float32, model_device)
    gen = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 6, 32, generator=gen)
    adapters = {
        "lora.3.q_proj.A": torch.randn(2, 32, generator=gen) * 0.1,
        "lora.3.q_proj.B": torch.randn(32, 2, generator=gen) * 0.1,
        "prompt.2": torch.randn(2, 32, generator=gen) * 0.1,
    }
    grad_out = torch.randn(2, 6, 32, generator=gen)
    want_in, want = span_backward(on_cpu, hidden, adapters, grad_out)
    got_in, got = span_backward(on_device, hidden, adapters, grad_out)
    assert got_in.device == CPU and all(g.device == CPU for g in got.values())
    rtol, atol = TOLERANCE[torch.float32]
    torch.testing.assert_close(got_in, want_in, rtol=rtol, atol=atol)
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=rtol, atol=atol)


def test_a_verifier_recomputes_on_the_device_and_fingerprints_on_cpu_float32(
    tiny_models: Callable[[str], TinyModel], model_device: torch.device
) -> None:
    tiny = tiny_models("llama")
    span = LayerSpan(5, 6)  # the last hop: logits
    x = [torch.randn(1, 4, 32, generator=torch.Generator().manual_seed(5))]
    on_cpu = recompute_span(load_block_from_parts(tiny.parts_dir, tiny.config, span), x)
    on_device = recompute_span(
        load_block_from_parts(tiny.parts_dir, tiny.config, span, torch.float32, model_device), x
    )
    assert on_device.device == CPU
    rtol, atol = TOLERANCE[torch.float32]
    torch.testing.assert_close(on_device, on_cpu, rtol=rtol, atol=atol)
    # the same values give the same fingerprint bytes wherever and in whatever float dtype they sit
    out = on_cpu.unsqueeze(0)[:, :1]
    assert make_fingerprint(out.to(model_device)) == make_fingerprint(out)
    half = out.to(torch.bfloat16)
    assert make_fingerprint(half.to(model_device)) == make_fingerprint(half.float())


@pytest.mark.parametrize("name", ["bert", "vit"])
def test_encoder_blocks_on_the_device_match_the_cpu(
    name: str, tiny_models: Callable[[str], TinyModel], model_device: torch.device
) -> None:
    tiny = tiny_models(name)
    spans = [LayerSpan(0, 3), LayerSpan(3, 6)]
    gen = torch.Generator().manual_seed(2)
    x = (
        torch.randint(0, 96, (2, 7), generator=gen)
        if name == "bert"
        else torch.randn(2, 3, 16, 16, generator=gen)
    )
    mask = torch.ones(2, 7, dtype=torch.long) if name == "bert" else None
    if mask is not None:
        mask[1, 5:] = 0
    outs = []
    for device in (CPU, model_device):
        h = x
        for span in spans:
            h = load_block_from_parts(tiny.parts_dir, tiny.config, span, torch.float32, device).forward(
                h, mask
            )
            assert h.device == CPU
        outs.append(h)
    rtol, atol = TOLERANCE[torch.float32]
    torch.testing.assert_close(outs[1], outs[0], rtol=rtol, atol=atol)


#: SmolLM2: the largest |logit difference| of the prompt's step, as a share of the largest |logit| (32.3 here);
#: measured on the CPU: bfloat16 0.0095, float16 0.0017, float32 0 (bitwise)
SMOLLM2_SHARE = {torch.float32: 1e-3, torch.float16: 0.02, torch.bfloat16: 0.05}


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_smollm2_on_the_device_matches_the_cpu_reference(
    dtype: torch.dtype,
    smollm2_model: tuple[PreTrainedModel, Any],
    smollm2_parts: tuple[Path, dict[str, Any], Any],
    model_device: torch.device,
) -> None:
    model, _ = smollm2_model
    parts_dir, config, tokenizer = smollm2_parts
    messages = [{"role": "user", "content": "Name three uses of a paperclip."}]
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    blocks = [
        load_block_from_parts(parts_dir, config, LayerSpan(a, a + 10), dtype, model_device)
        for a in (0, 10, 20)
    ]
    expected = greedy_generate(model, ids, 16)  # unsplit, CPU, float32
    got = generate_greedy(blocks, ids, 16)
    first, reference = got.logits[0], expected.logits[0]
    share = float((first - reference).abs().max()) / float(reference.abs().max())
    same = sum(a == b for a, b in zip(got.tokens, expected.tokens, strict=True))
    print(f"[measured] SmolLM2 3x10 on {model_device} in {dtype}: prompt step max |diff| / max |logit| {share:.2e}, "
          f"tokens equal to CPU float32 {same}/{len(expected.tokens)}")  # fmt: skip
    assert share <= SMOLLM2_SHARE[dtype], share
    if dtype == torch.float32:
        assert got.tokens == expected.tokens
        assert model_device != CPU or torch.equal(got.logits, expected.logits)
    else:
        assert share > 0  # it really ran in half precision
        assert (
            got.tokens[:4] == expected.tokens[:4]
        )  # all 16 agree on the CPU; the first 4 are asked of any device


# ---------------------------------------------------------------------- device names and defaults (pure)
@pytest.mark.parametrize(
    ("spec", "available", "count", "expected"),
    [
        ("cpu", False, 0, CPU),
        ("cpu", True, 2, CPU),
        ("auto", False, 0, CPU),
        ("auto", True, 2, CUDA0),
        ("cuda", True, 1, CUDA0),
        ("cuda:1", True, 2, torch.device("cuda", 1)),
        (" cuda:0 ", True, 1, CUDA0),
    ],
)
def test_device_names_resolve_exactly(spec: str, available: bool, count: int, expected: torch.device) -> None:
    assert resolve_device(spec, cuda_available=available, cuda_count=count) == expected


@pytest.mark.parametrize(
    ("spec", "available", "count", "fragment"),
    [
        ("cuda", False, 0, "torch sees no GPU.*--device cpu"),
        ("cuda:0", False, 0, "torch sees no GPU"),
        ("cuda:2", True, 2, "has 2 GPU\\(s\\), cuda:0 to cuda:1"),
        ("gpu", True, 1, "not one of auto, cpu, cuda or cuda:N"),
        ("cuda:", True, 1, "not one of"),
        ("cuda:-1", True, 1, "not one of"),
        ("CPU", False, 0, "not one of"),
    ],
)
def test_bad_or_absent_devices_are_refused_with_the_fix(
    spec: str, available: bool, count: int, fragment: str
) -> None:
    with pytest.raises(DeviceError, match=fragment):
        resolve_device(spec, cuda_available=available, cuda_count=count)


def test_auto_on_this_machine_is_what_torch_sees() -> None:
    expected = CUDA0 if torch.cuda.is_available() else CPU
    assert machine_device("auto") == expected
    assert machine_device("cpu") == CPU
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="torch sees no GPU"):
            machine_device("cuda")


@pytest.mark.parametrize(
    ("requested", "device", "bf16", "allowed", "expected"),
    [
        (None, CPU, True, ("float32", "float16", "bfloat16"), "float32"),  # the CPU: as before GPUs
        (None, CUDA0, True, ("float32", "float16", "bfloat16"), "bfloat16"),
        (None, CUDA0, False, ("float32", "float16", "bfloat16"), "float16"),  # a GPU without bf16
        (None, CUDA0, True, ("float32",), "float32"),  # the manifest allows no half precision
        (
            None,
            CUDA0,
            False,
            ("bfloat16",),
            "float16",
        ),  # nothing fits: the default, for the manifest to refuse
        ("float32", CUDA0, True, ("float32", "bfloat16"), "float32"),  # --dtype overrides
        ("bfloat16", CPU, True, ("float32",), "bfloat16"),  # as asked: the manifest check refuses it
    ],
)
def test_default_dtype_per_device_and_manifest(
    requested: str | None, device: torch.device, bf16: bool, allowed: tuple[str, ...], expected: str
) -> None:
    assert choose_dtype(requested, device, bf16_supported=bf16, allowed=allowed) == expected


def test_preferred_dtypes_and_gpu_budget() -> None:
    assert preferred_dtypes(CPU, bf16_supported=True) == ("float32",)
    assert preferred_dtypes(CUDA0, bf16_supported=True) == ("bfloat16", "float32")
    assert device_budget_bytes(10 * 2**30, 0.8) == int(8 * 2**30)
    with pytest.raises(DeviceError, match="fraction"):
        device_budget_bytes(2**30, 0.0)
    with pytest.raises(DeviceError, match="--dtype"):
        choose_dtype("int8", CPU, bf16_supported=True)


def test_cuda_attention_is_prepared_without_the_cudnn_kernel() -> None:
    """The cuDNN SDPA kernel re-plans at every new key length (40.7 vs 5.5 ms a decode step on an H200)."""
    from shardnet.model.device import prepare_cuda_attention

    before = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(True)
    try:
        prepare_cuda_attention()
        assert not torch.backends.cuda.cudnn_sdp_enabled()
        assert torch.backends.cuda.flash_sdp_enabled()  # the other kernels stay
    finally:
        torch.backends.cuda.enable_cudnn_sdp(before)
