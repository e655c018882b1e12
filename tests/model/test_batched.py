"""Batched decoding across sessions (shardnet.model.batched): every session's greedy tokens equal the
same prompt run alone, a lone step is the exact single-sequence path, a bad step fails alone."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch

from shardnet.model import Block, ModelError, batched, generate_greedy, load_block_from_parts
from shardnet.model.batched import step_many
from shardnet.model.session import BlockSession
from shardnet.span import LayerSpan
from tests.fixtures_model import DECODERS, TinyModel

pytestmark = pytest.mark.usefixtures("one_thread")

SPANS = [(0, 2), (2, 5), (5, 6)]
PROMPT_LENGTHS = [1, 3, 9, 4, 12, 2, 7, 5]  # 8 sessions, ragged
NEW_TOKENS = [6, 9, 4, 8, 5, 10, 3, 7]


def _blocks(tiny: TinyModel) -> list[Block]:
    return [load_block_from_parts(tiny.parts_dir, tiny.config, LayerSpan(a, b)) for a, b in SPANS]


def _prompts(vocab: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(11)
    return [torch.randint(0, vocab, (1, n), generator=gen) for n in PROMPT_LENGTHS]


def _spy(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """The sizes of the batches `batched.<name>` (decode_batch or prefill_batch) runs from now on; the real one
    runs."""
    sizes: list[int] = []
    real = getattr(batched, name)

    def counted(sessions: Sequence[BlockSession], inputs: Sequence[torch.Tensor]) -> list[batched.StepResult]:
        sizes.append(len(sessions))
        return list(real(sessions, inputs))

    monkeypatch.setattr(batched, name, counted)
    return sizes


def _run_together(
    blocks: Sequence[Block], prompts: Sequence[torch.Tensor], wanted: Sequence[int]
) -> tuple[list[list[int]], list[list[torch.Tensor]]]:
    """All sessions step in lockstep; each block runs every live session's step in one `step_many`."""
    chains = [[b.new_session() for b in blocks] for _ in prompts]
    tokens: list[list[int]] = [[] for _ in prompts]
    logits: list[list[torch.Tensor]] = [[] for _ in prompts]
    inputs = list(prompts)
    positions = [0] * len(prompts)
    while live := [i for i in range(len(prompts)) if len(tokens[i]) < wanted[i]]:
        hidden = [inputs[i] for i in live]
        for depth in range(len(blocks)):
            outs = step_many([chains[i][depth] for i in live], hidden, [positions[i] for i in live])
            assert all(isinstance(o, torch.Tensor) for o in outs), outs
            hidden = [o for o in outs if isinstance(o, torch.Tensor)]
        for i, out in zip(live, hidden, strict=True):
            positions[i] += int(inputs[i].shape[1])
            token = int(torch.argmax(out[0, -1]))
            tokens[i].append(token)
            logits[i].append(out[0, -1])
            inputs[i] = torch.tensor([[token]])
    return tokens, logits


@pytest.mark.parametrize("name", DECODERS)
def test_batched_sessions_decode_the_same_tokens_as_each_alone(
    name: str, tiny_models: Callable[[str], TinyModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny = tiny_models(name)
    blocks = _blocks(tiny)
    prompts = _prompts(tiny.model.config.vocab_size)
    batch_sizes = _spy(monkeypatch, "decode_batch")
    got_tokens, got_logits = _run_together(blocks, prompts, NEW_TOKENS)
    if name == "mistral":  # sliding-window layers keep a window, not every position: each runs alone
        assert batch_sizes == []
    else:
        # every decode round with 2+ sessions live batches (in each block without sliding-window layers)
        assert max(batch_sizes) == len(PROMPT_LENGTHS)
        assert len(batch_sizes) >= sorted(NEW_TOKENS)[-2] - 1
    worst = 0.0
    for prompt, n, tokens, logits in zip(prompts, NEW_TOKENS, got_tokens, got_logits, strict=True):
        alone = generate_greedy(blocks, prompt, n)
        assert tokens == alone.tokens  # token by token
        # batched matrix products may round the last bits differently from batch 1: close, not bitwise
        diff = float((torch.stack(logits) - alone.logits).abs().max())
        worst = max(worst, diff)
        assert diff < 1e-4
    print(f"{name}: largest |batched - alone| logit difference {worst:.3g}")


def test_a_lone_step_is_the_exact_single_session_path(tiny_models: Callable[[str], TinyModel]) -> None:
    tiny = tiny_models("llama")
    block = load_block_from_parts(tiny.parts_dir, tiny.config, LayerSpan(0, 6))
    ids = _prompts(tiny.model.config.vocab_size)[2]
    a, b = block.new_session(), block.new_session()
    for pos, x in [(0, ids), (ids.shape[1], torch.tensor([[5]])), (ids.shape[1] + 1, torch.tensor([[7]]))]:
        (out,) = step_many([a], [x], [pos])
        assert isinstance(out, torch.Tensor)
        assert torch.equal(out, b.step(x, pos))


def test_one_bad_step_fails_alone_and_the_batch_goes_on(tiny_models: Callable[[str], TinyModel]) -> None:
    tiny = tiny_models("llama")
    block = load_block_from_parts(tiny.parts_dir, tiny.config, LayerSpan(0, 6))
    prompts = _prompts(tiny.model.config.vocab_size)[:4]
    sessions: list[BlockSession] = [block.new_session() for _ in prompts]
    refs = [block.new_session() for _ in prompts]
    for s, r, p in zip(sessions, refs, prompts, strict=True):
        s.step(p, 0)
        r.step(p, 0)
    vocab = tiny.model.config.vocab_size
    inputs = [torch.tensor([[3]]), torch.tensor([[vocab + 5]]), torch.tensor([[4]]), torch.tensor([[6]])]
    positions = [int(p.shape[1]) for p in prompts]
    positions[3] += 1  # a wrong position: refused, its session untouched
    outs = step_many(sessions, inputs, positions)
    assert isinstance(outs[1], ModelError) and "token ids must lie in" in str(outs[1])
    assert isinstance(outs[3], ModelError) and "send the inputs from position" in str(outs[3])
    for i in (0, 2):
        out = outs[i]
        assert isinstance(out, torch.Tensor)
        expected = refs[i].step(inputs[i], positions[i])
        assert torch.allclose(out, expected, atol=1e-5)
        assert int(torch.argmax(out[0, -1])) == int(torch.argmax(expected[0, -1]))
    assert sessions[3].length == positions[3] - 1  # and it can still go on from the right position
    again = sessions[3].step(inputs[3], positions[3] - 1)
    assert torch.allclose(again, refs[3].step(inputs[3], positions[3] - 1), atol=1e-5)


@pytest.mark.parametrize("name", DECODERS)
def test_fresh_sessions_prefill_together_as_each_alone(
    name: str, tiny_models: Callable[[str], TinyModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ragged prompts' first steps run as one right-padded forward per block: each output, and each session's
    cache (the next step from it), equals the same prompt run alone; the padding never reaches a prompt."""
    tiny = tiny_models(name)
    blocks = _blocks(tiny)
    tripled = [torch.cat([p, p, p], dim=1) for p in _prompts(tiny.model.config.vocab_size)]
    prompts = tripled[:5]  # 3..36 tokens
    groups = _spy(monkeypatch, "prefill_batch")
    monkeypatch.setattr(batched, "PREFILL_PADDING", 100.0)  # every prompt in one group
    together = [[b.new_session() for b in blocks] for _ in prompts]
    alone = [[b.new_session() for b in blocks] for _ in prompts]
    hidden: list[torch.Tensor] = list(prompts)
    for depth in range(len(blocks)):
        outs = step_many([c[depth] for c in together], hidden, [0] * len(prompts))
        refs = [c[depth].step(x, 0) for c, x in zip(alone, hidden, strict=True)]
        for out, ref in zip(outs, refs, strict=True):
            assert isinstance(out, torch.Tensor)
            assert out.shape == ref.shape
            assert torch.allclose(out, ref, atol=1e-4), float((out - ref).abs().max())
        hidden = [o for o in outs if isinstance(o, torch.Tensor)]
    # a block whose span has sliding-window layers (mistral; some of the tiny qwen2's) prefills each prompt alone
    plain = [batched.can_prefill_together(b.new_session(), prompts[0]) for b in blocks]
    assert groups == [len(prompts)] * sum(plain)
    if name != "mistral":
        assert plain[0]
    # the caches hold each prompt's positions only: the next (decode) step is the same as alone
    for c, a, p in zip(together, alone, prompts, strict=True):
        x: torch.Tensor = torch.tensor([[7]])
        y: torch.Tensor = x
        for s, r in zip(c, a, strict=True):
            assert s.length == r.length == p.shape[1]
            x, y = s.step(x, s.length), r.step(y, r.length)
        assert torch.allclose(x, y, atol=1e-4)
        assert int(torch.argmax(x[0, -1])) == int(torch.argmax(y[0, -1]))


def test_prefill_groups_bound_padding_and_size(monkeypatch: pytest.MonkeyPatch) -> None:
    lengths = [10, 300, 12, 11, 40, 9, 38]
    groups = batched.prefill_groups(list(range(len(lengths))), lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        padded, real = len(g) * max(lengths[i] for i in g), sum(lengths[i] for i in g)
        assert padded <= batched.PREFILL_BATCH_POSITIONS or len(g) == 1
        assert padded <= batched.PREFILL_PADDING * real or padded - real <= batched.PREFILL_SLACK
    assert [sorted(lengths[i] for i in g) for g in groups] == [[9, 10, 11, 12], [38, 40], [300]]
    short = [6, 1, 4, 2, 5, 3]  # padded by 15 positions: within the slack, one forward
    assert [sorted(g) for g in batched.prefill_groups(list(range(6)), short)] == [[0, 1, 2, 3, 4, 5]]
    monkeypatch.setattr(batched, "PREFILL_SLACK", 0)
    assert len(batched.prefill_groups(list(range(6)), short)) > 1
    monkeypatch.setattr(batched, "PREFILL_BATCH_POSITIONS", 24)
    assert [len(g) for g in batched.prefill_groups([0, 1, 2, 3], [8, 8, 8, 8])] == [3, 1]


def test_a_long_or_continuing_prefill_runs_alone(
    tiny_models: Callable[[str], TinyModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    tiny = tiny_models("llama")
    block = load_block_from_parts(tiny.parts_dir, tiny.config, LayerSpan(0, 6))
    calls: list[int] = []
    monkeypatch.setattr(batched, "prefill_batch", lambda s, x: calls.append(len(s)) or [])
    monkeypatch.setattr(batched, "PREFILL_MAX_POSITIONS", 8)
    a, b, c = block.new_session(), block.new_session(), block.new_session()
    c.step(torch.tensor([[1, 2]]), 0)
    outs = step_many(
        [a, b, c],
        [torch.arange(9).unsqueeze(0), torch.arange(3).unsqueeze(0), torch.tensor([[3, 4]])],
        [0, 0, 2],
    )
    assert (
        calls == []
    )  # 9 > 8 positions, a single short fresh prompt, and a session already holding 2 run alone
    assert all(isinstance(o, torch.Tensor) for o in outs)
    assert (a.length, b.length, c.length) == (9, 3, 4)


@pytest.mark.parametrize("kind", ["prefill", "decode"])
def test_a_session_whose_cache_append_fails_fails_alone(
    kind: str, tiny_models: Callable[[str], TinyModel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch computed, then appending one session's keys and values raises midway (out of memory): that
    session alone fails and refuses further steps (its layers hold different lengths); the sessions appended
    before it keep their results and go on (they are not rerun from a cache that already holds the step)."""
    tiny = tiny_models("llama")
    block = load_block_from_parts(tiny.parts_dir, tiny.config, LayerSpan(0, 4))
    prompts = _prompts(tiny.model.config.vocab_size)[2:5]  # 9, 4 and 12 tokens
    sessions = [block.new_session() for _ in prompts]
    refs = [block.new_session() for _ in prompts]
    if kind == "decode":
        for s, r, p in zip(sessions, refs, prompts, strict=True):
            s.step(p, 0)
            r.step(p, 0)
    inputs = list(prompts) if kind == "prefill" else [torch.tensor([[t]]) for t in (3, 4, 5)]
    positions = [s.length for s in sessions]
    cache = sessions[1].cache
    assert cache is not None
    real_update = cache.update
    calls: list[int] = []

    def fails_once_on_the_second_layer(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise MemoryError("out of memory appending the second layer")
        return real_update(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cache, "update", fails_once_on_the_second_layer)
    outs = step_many(sessions, inputs, positions)
    assert isinstance(outs[1], MemoryError), outs[1]
    with pytest.raises(ModelError, match="an earlier step failed"):
        sessions[1].step(inputs[1], positions[1])
    for i in (0, 2):
        out = outs[i]
        assert isinstance(out, torch.Tensor), out
        assert torch.allclose(out, refs[i].step(inputs[i], positions[i]), atol=1e-4)
        after = torch.tensor([[7]])
        assert torch.allclose(
            sessions[i].step(after, sessions[i].length), refs[i].step(after, refs[i].length), atol=1e-4
        )


@pytest.mark.parametrize("kind", ["prefill", "decode"])
def test_a_session_given_twice_steps_once_then_refuses_the_repeat(
    kind: str, tiny_models: Callable[[str], TinyModel]
) -> None:
    """`step_many` with one session twice is that session's two steps one after the other: the first runs,
    the repeat of the same position is refused; neither may join one batch (both would be appended, each
    computed at the same positions)."""
    tiny = tiny_models("llama")
    block = load_block_from_parts(tiny.parts_dir, tiny.config, LayerSpan(0, 4))
    prompt = _prompts(tiny.model.config.vocab_size)[2]
    session, other, ref = block.new_session(), block.new_session(), block.new_session()
    if kind == "decode":
        for s in (session, other, ref):
            s.step(prompt, 0)
    x = prompt if kind == "prefill" else torch.tensor([[3]])
    pos = session.length
    outs = step_many([session, session, other], [x, x, x], [pos, pos, pos])
    expected = ref.step(x, pos)
    assert isinstance(outs[0], torch.Tensor) and torch.allclose(outs[0], expected, atol=1e-4)
    assert isinstance(outs[1], ModelError) and "send the inputs from position" in str(outs[1])
    assert session.length == ref.length
    after = torch.tensor([[7]])
    assert torch.allclose(session.step(after, session.length), ref.step(after, ref.length), atol=1e-4)
