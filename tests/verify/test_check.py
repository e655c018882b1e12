"""One-pass checks of a hop on the tiny Llama: honest drift passes, every cheat class fails.

Jobs run step by step through 3 hops (layers 0:2, 2:4, 4:6); the verifier recomputes each hop once in
float32 at the calibrated tolerance of the workers' dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch

from shardnet.model import load_block_from_parts
from shardnet.model.block import Block
from shardnet.span import LayerSpan
from shardnet.verify import cheats
from shardnet.verify.check import GREEDY, Sampling, Verdict, check_hop, recompute_span
from shardnet.verify.sampler import job_seed
from shardnet.verify.simulate import HonestHop, Hop, JobTrace, honest_factories, run_job
from shardnet.verify.tolerance import tolerance_for
from tests.fixtures_model import TinyModel

SPANS = [LayerSpan(0, 2), LayerSpan(2, 4), LayerSpan(4, 6)]
STEPS = 24
MAX_LEN = 8 + STEPS


@pytest.fixture(scope="module")
def chains(tiny_models: Callable[[str], TinyModel]) -> dict[torch.dtype, list[Block]]:
    tiny = tiny_models("llama")
    return {
        d: [load_block_from_parts(tiny.parts_dir, tiny.config, s, dtype=d) for s in SPANS]
        for d in (torch.float32, torch.bfloat16, torch.float16)
    }


@pytest.fixture(autouse=True)
def _one_thread(one_thread: None) -> Iterator[None]:
    yield


def _prompt(seed: int) -> torch.Tensor:
    return torch.randint(0, 96, (1, 8), generator=torch.Generator().manual_seed(seed))


def _check_all(
    chains: dict[torch.dtype, list[Block]], trace: JobTrace, dtype: torch.dtype, sampling: Sampling = GREEDY
) -> list[Verdict]:
    tol = tolerance_for(dtype)
    return [
        check_hop(b, h.inputs, h.fingerprints, tol, tokens=trace.tokens, sampling=sampling, sent=h.outputs)
        for b, h in zip(chains[torch.float32], trace.hops, strict=True)
    ]


def _cheat_job(
    chains: dict[torch.dtype, list[Block]], hop: int, make: Callable[[list[Block]], Hop], seed: int = 0
) -> tuple[JobTrace, list[Verdict]]:
    blocks = chains[torch.float32]
    factories = honest_factories(blocks, MAX_LEN)
    factories[hop] = lambda _i: make(blocks)
    trace = run_job(factories, _prompt(seed), STEPS)
    return trace, _check_all(chains, trace, torch.float32)


def test_one_pass_recomputes_what_the_steps_computed(chains: dict[torch.dtype, list[Block]]) -> None:
    blocks = chains[torch.float32]
    trace = run_job(honest_factories(blocks, MAX_LEN), _prompt(1), 6)
    middle = recompute_span(blocks[1], trace.hops[1].inputs)
    stepped = torch.cat([o[0] for o in trace.hops[1].outputs])
    assert middle.shape == stepped.shape == (8 + 5, 32)
    assert torch.allclose(middle, stepped, rtol=1e-4, atol=1e-5)
    logits = recompute_span(blocks[2], trace.hops[2].inputs)
    last_rows = logits[[7, 8, 9, 10, 11, 12]]
    assert torch.allclose(last_rows, torch.cat([o[0] for o in trace.hops[2].outputs]), rtol=1e-4, atol=1e-4)
    assert trace.tokens == torch.argmax(last_rows, dim=1).tolist()
    # the head on each step's last position only: the same rows (what a verifier computes)
    ends = recompute_span(blocks[2], trace.hops[2].inputs, step_ends=True)
    assert ends.shape == last_rows.shape
    assert torch.allclose(ends, last_rows, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("dtype", "threads"),
    [
        (torch.float32, None),
        (torch.float32, 2),
        (torch.bfloat16, None),
        (torch.float16, None),
    ],
)
def test_honest_drift_passes(
    chains: dict[torch.dtype, list[Block]], dtype: torch.dtype, threads: int | None
) -> None:
    for seed in range(3):
        trace = run_job(honest_factories(chains[dtype], MAX_LEN, threads), _prompt(seed), STEPS)
        verdicts = _check_all(chains, trace, dtype)
        assert all(v.passed for v in verdicts), [(v.failed_steps, v.max_distance) for v in verdicts]
        assert [v.positions_recomputed for v in verdicts] == [8 + STEPS - 1] * 3


def test_honest_sampled_job_passes_and_a_resampled_token_fails(
    chains: dict[torch.dtype, list[Block]],
) -> None:
    sampling = Sampling(job_seed(31337, "0x" + "5a" * 20, 4), temperature=0.8)
    trace = run_job(honest_factories(chains[torch.bfloat16], MAX_LEN), _prompt(4), STEPS, sampling)
    assert all(v.passed for v in _check_all(chains, trace, torch.bfloat16, sampling))
    other = Sampling(job_seed(31337, "0x" + "5a" * 20, 5), temperature=0.8)  # tokens drawn from another seed
    assert not _check_all(chains, trace, torch.bfloat16, other)[2].passed


CHEATS: dict[str, tuple[int, Callable[[list[Block]], Hop]]] = {
    "gross noise": (1, lambda b: cheats.NoiseHop(HonestHop(b[1], MAX_LEN), 1.0)),
    "subtle noise at 3x tolerance": (
        1,
        lambda b: cheats.NoiseHop(HonestHop(b[1], MAX_LEN), 3 * tolerance_for("float32").distance),
    ),
    "lazy: no layers": (1, lambda b: cheats.LayersHop(b[1], None, MAX_LEN)),
    "lazy first hop: embedding only": (0, lambda b: cheats.LayersHop(b[0], None, MAX_LEN)),
    "half layers": (1, lambda b: cheats.LayersHop(b[1], cheats.half_layers(b[1].span), MAX_LEN)),
    "int8 weights": (1, lambda b: HonestHop(cheats.int8_block(b[1]), MAX_LEN)),
    "logit lens": (2, lambda b: cheats.LayersHop(b[2], None, MAX_LEN)),
    "second-best always": (2, lambda b: cheats.SecondBestHop(HonestHop(b[2], MAX_LEN))),
    "second-best 30%": (2, lambda b: cheats.SecondBestHop(HonestHop(b[2], MAX_LEN), 0.3, seed=1)),
}


@pytest.mark.parametrize("name", list(CHEATS))
def test_each_cheat_fails_and_honest_hops_after_it_pass(
    chains: dict[torch.dtype, list[Block]], name: str
) -> None:
    hop, make = CHEATS[name]
    _, verdicts = _cheat_job(chains, hop, make)
    assert not verdicts[hop].passed, name
    for i, v in enumerate(verdicts):
        if i != hop:  # honest hops fed by a cheater computed honestly on what they received
            assert v.passed, (name, i, v.failed_steps)


def test_sparse_cheat_is_found_at_exactly_its_steps(chains: dict[torch.dtype, list[Block]]) -> None:
    made: list[cheats.NoiseHop] = []

    def make(b: list[Block]) -> Hop:
        made.append(cheats.NoiseHop(HonestHop(b[1], MAX_LEN), 1.0, share=0.1, seed=3))
        return made[-1]

    _, verdicts = _cheat_job(chains, 1, make)
    assert made[0].corrupted_steps  # (the seed is chosen so that some steps are corrupted)
    assert verdicts[1].failed_steps == made[0].corrupted_steps


def test_second_best_is_caught_by_the_token_rule_alone(chains: dict[torch.dtype, list[Block]]) -> None:
    trace, verdicts = _cheat_job(chains, 2, lambda b: cheats.SecondBestHop(HonestHop(b[2], MAX_LEN)))
    assert all(s.token_ok is False for s in verdicts[2].steps)
    assert all(s.token_margin is not None and s.token_margin > 0 for s in verdicts[2].steps)


def test_mismatched_inputs_are_refused(chains: dict[torch.dtype, list[Block]]) -> None:
    blocks = chains[torch.float32]
    trace = run_job(honest_factories(blocks, MAX_LEN), _prompt(0), 3)
    tol = tolerance_for("float32")
    with pytest.raises(ValueError, match="fingerprints"):
        check_hop(blocks[1], trace.hops[1].inputs, trace.hops[1].fingerprints[:2], tol)
    with pytest.raises(ValueError, match="one emitted token per step"):
        check_hop(blocks[2], trace.hops[2].inputs, trace.hops[2].fingerprints, tol)
    # a fingerprint moved to another step does not fit the recomputation there
    fps = list(trace.hops[1].fingerprints)
    fps[1], fps[2] = fps[2], fps[1]
    assert check_hop(blocks[1], trace.hops[1].inputs, fps, tol).failed_steps == [1, 2]


def test_a_fingerprint_must_be_that_of_the_bytes_sent(chains: dict[torch.dtype, list[Block]]) -> None:
    blocks = chains[torch.float32]
    trace = run_job(honest_factories(blocks, MAX_LEN), _prompt(2), 6)
    hop = trace.hops[1]
    steered = [o.clone() for o in hop.outputs]
    steered[3][0, -1, 0] += 5.0  # sent something else than it computed, kept the honest fingerprint
    tol = tolerance_for("float32")
    assert check_hop(
        blocks[1], hop.inputs, hop.fingerprints, tol
    ).passed  # the recomputation alone cannot see it
    verdict = check_hop(blocks[1], hop.inputs, hop.fingerprints, tol, sent=steered)
    assert verdict.failed_steps == [3] and verdict.steps[3].bound is False
    assert all(
        s.bound for s in check_hop(blocks[1], hop.inputs, hop.fingerprints, tol, sent=hop.outputs).steps
    )
