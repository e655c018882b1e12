"""Sampling (greedy, seeded temperature / top-p) and settlement math."""

from __future__ import annotations

import pytest
import torch

from coordinator.sampling import Sampler, SamplingParams
from coordinator.settlement import HopWork, expected_split, layer_tokens, overlapping_hops
from shardnet.errors import ConfigError
from shardnet.span import LayerSpan


def test_greedy_is_argmax() -> None:
    logits = torch.tensor([[[0.1, 3.0, -1.0, 2.9]]])
    assert Sampler(SamplingParams())(logits) == 1


def test_seeded_sampling_is_reproducible_and_seed_dependent() -> None:
    torch.manual_seed(0)
    logits = [torch.randn(50) for _ in range(20)]

    def run(seed: int) -> list[int]:
        s = Sampler(SamplingParams(temperature=1.0, top_p=0.9, seed=seed))
        return [s(x) for x in logits]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_top_p_keeps_only_the_nucleus() -> None:
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    s = Sampler(SamplingParams(temperature=1.0, top_p=0.75, seed=1))
    seen = {s(logits) for _ in range(300)}
    assert seen == {0, 1}
    s = Sampler(SamplingParams(temperature=1.0, top_p=0.1, seed=1))
    assert {s(logits) for _ in range(50)} == {0}


def test_unseeded_sampling_gets_a_recorded_seed() -> None:
    s = Sampler(SamplingParams(temperature=0.7, ignore_eos=True))
    assert s.params.seed is not None and s.params.ignore_eos
    assert SamplingParams().with_seed().seed is None  # greedy needs none


@pytest.mark.parametrize("kwargs", [{"temperature": -1.0}, {"top_p": 0.0}, {"top_p": 1.5}, {"seed": -3}])
def test_invalid_params(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        SamplingParams(**kwargs)


def test_layer_tokens_count_positions_and_cap() -> None:
    hops = [HopWork(LayerSpan(0, 10), 12), HopWork(LayerSpan(10, 30), 5), HopWork(LayerSpan(10, 30), 7)]
    assert layer_tokens(hops, max_tokens=8, max_prompt_tokens=100) == [120, 100, 140]
    assert layer_tokens([HopWork(LayerSpan(0, 2), 500)], max_tokens=8, max_prompt_tokens=100) == [216]
    with pytest.raises(ValueError):
        layer_tokens([HopWork(LayerSpan(0, 2), -1)], max_tokens=1, max_prompt_tokens=1)


def test_expected_split() -> None:
    split = expected_split(
        [100, 50, 30], [True, False, True], price_per_layer_token=10, coordinator_fee_bps=500, escrow=5000
    )
    assert split.per_hop == (1000, 0, 300)
    assert split.paid_to_nodes == 1300
    assert split.coordinator_fee == 65
    assert split.refund == 5000 - 1365
    with pytest.raises(ValueError, match="exceeds"):
        expected_split([100], [True], price_per_layer_token=10, coordinator_fee_bps=0, escrow=999)


def test_overlapping_hops_are_left_out_so_no_layer_is_settled_twice() -> None:
    # route [0,2) + [2,4); a failover replacement [2,4) that computed more; a [1,3) hop; a hop without commitment
    hops = [
        HopWork(LayerSpan(0, 2), 10),
        HopWork(LayerSpan(2, 4), 4),
        HopWork(LayerSpan(2, 4), 10),
        HopWork(LayerSpan(1, 3), 10),
        HopWork(LayerSpan(0, 4), 10),
    ]
    assert overlapping_hops(hops, [0, 1, 2, 3]) == {1, 3}  # the replacement (more positions) is kept
    assert overlapping_hops(hops, [0, 2]) == set()
    assert overlapping_hops(hops, [4, 0]) == {4}  # same start: more positions first, then hop order
    assert overlapping_hops(hops, []) == set()
