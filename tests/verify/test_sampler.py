"""The job's seeded sampler and the last hop's token rules (greedy tie margin, sampled draw)."""

from __future__ import annotations

import pytest
import torch

from shardnet.verify.sampler import check_greedy, check_sampled, job_seed, sample_token, uniform
from shardnet.verify.tolerance import tolerance_for

REGISTRY = "0x" + "11" * 20


def test_greedy_token_must_be_the_argmax_unless_within_the_tie_margin() -> None:
    logits = torch.tensor([1.0, 5.0, 4.9995, -2.0])
    assert check_greedy(1, logits, tie_margin=0.0).ok
    near = check_greedy(2, logits, tie_margin=1e-3)
    assert near.ok and near.expected == 1 and near.margin == pytest.approx(5e-4, rel=1e-3)
    assert not check_greedy(2, logits, tie_margin=1e-4).ok
    assert not check_greedy(0, logits, tie_margin=1e-3).ok  # a clear loser is never a tie
    assert not check_greedy(4, logits, tie_margin=10.0).ok  # not a token of this vocabulary
    assert not check_greedy(1, torch.tensor([1.0, float("nan")]), tie_margin=10.0).ok


def test_job_seed_binds_chain_registry_and_job() -> None:
    seed = job_seed(31337, REGISTRY, 7)
    assert len(seed) == 32 and seed == job_seed(31337, REGISTRY, 7)
    assert seed != job_seed(31337, REGISTRY, 8)
    assert seed != job_seed(1, REGISTRY, 7)
    assert seed != job_seed(31337, "0x" + "22" * 20, 7)
    with pytest.raises(ValueError, match="20-byte address"):
        job_seed(1, "0x1234", 7)


def test_sampler_is_deterministic_in_seed_and_step_and_follows_the_distribution() -> None:
    seed = job_seed(31337, REGISTRY, 1)
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    draws = [sample_token(logits, seed, s) for s in range(3000)]
    assert draws == [sample_token(logits.clone(), seed, s) for s in range(3000)]  # same every time
    assert draws != [sample_token(logits, job_seed(31337, REGISTRY, 2), s) for s in range(3000)]
    freq = [draws.count(t) / len(draws) for t in range(3)]
    assert freq == pytest.approx([0.5, 0.3, 0.2], abs=0.03)
    assert 0.0 <= uniform(seed, 0) < 1.0 and uniform(seed, 0) != uniform(seed, 1)
    # temperature sharpens: at 0.05 the top token is drawn nearly always
    cold = [sample_token(logits, seed, s, temperature=0.05) for s in range(300)]
    assert cold.count(0) > 290


def test_sampled_token_must_be_the_seeded_draw_within_the_cdf_margin() -> None:
    seed = job_seed(31337, REGISTRY, 3)
    logits = torch.randn(50, generator=torch.Generator().manual_seed(0))
    margin = tolerance_for("float32").cdf_margin
    for step in range(20):
        token = sample_token(logits, seed, step, 0.8)
        assert check_sampled(token, logits, seed, step, 0.8, margin).ok
        other = (token + 1) % 50
        result = check_sampled(other, logits, seed, step, 0.8, margin)
        assert not result.ok and result.expected == token


def test_a_caller_seed_is_bound_to_the_deployment_not_the_job() -> None:
    from shardnet.verify.sampler import caller_seed, sampling_seed

    assert sampling_seed(31337, REGISTRY, 7, None) == job_seed(31337, REGISTRY, 7)
    mine = sampling_seed(31337, REGISTRY, 7, 5)
    assert mine == caller_seed(31337, REGISTRY, 5) == sampling_seed(31337, REGISTRY, 8, 5)  # any job
    assert mine not in (job_seed(31337, REGISTRY, 7), caller_seed(31337, REGISTRY, 6))
    assert mine != caller_seed(1, REGISTRY, 5) and mine != caller_seed(31337, "0x" + "22" * 20, 5)
    with pytest.raises(ValueError, match="63-bit"):
        caller_seed(31337, REGISTRY, -1)


def test_top_p_draws_only_from_the_nucleus_and_is_checked_with_it() -> None:
    seed = job_seed(31337, REGISTRY, 4)
    logits = torch.log(torch.tensor([0.05, 0.5, 0.15, 0.3]))
    draws = [sample_token(logits, seed, s, 1.0, top_p=0.75) for s in range(600)]
    assert set(draws) == {1, 3}  # 0.5 + 0.3 reach 0.75
    assert draws.count(1) / 600 == pytest.approx(0.5 / 0.8, abs=0.06)  # renormalized in the nucleus
    margin = tolerance_for("float32").cdf_margin
    for step, token in enumerate(draws[:50]):
        assert check_sampled(token, logits, seed, step, 1.0, margin, top_p=0.75).ok
        assert not check_sampled(2, logits, seed, step, 1.0, margin, top_p=0.75).ok  # outside the nucleus
        assert not check_sampled(4 - token, logits, seed, step, 1.0, margin, top_p=0.75).ok
    # a nucleus edge moved by honest drift: top_p 0.8 sits exactly on 0.5 + 0.3; a token of either nucleus passes
    edge = [sample_token(logits, seed, s, 1.0, top_p=0.8 + 1e-6) for s in range(200)]
    assert all(check_sampled(t, logits, seed, s, 1.0, 1e-5, top_p=0.8).ok for s, t in enumerate(edge))


def test_the_coordinator_draws_what_a_verifier_recomputes() -> None:
    from coordinator.sampling import Sampler, SamplingParams
    from shardnet.verify.sampler import sampling_seed

    logits = [torch.randn(1, 1, 60, generator=torch.Generator().manual_seed(i)) for i in range(30)]
    for params in (SamplingParams(temperature=0.8), SamplingParams(temperature=1.2, top_p=0.9, seed=5)):
        seed = sampling_seed(31337, REGISTRY, 9, params.seed)
        sampler = Sampler(params, seed=seed)
        drawn = [sampler(x) for x in logits]
        assert drawn == [
            sample_token(x, seed, s, params.temperature, params.top_p) for s, x in enumerate(logits)
        ]
        assert (
            Sampler(params, seed=seed).params.seed == params.seed
        )  # no random seed recorded: the job's rules
        assert drawn != [Sampler(params, seed=job_seed(31337, REGISTRY, 10))(x) for x in logits]
    greedy = Sampler(SamplingParams(), seed=job_seed(31337, REGISTRY, 9))
    assert [greedy(x) for x in logits] == [int(torch.argmax(x)) for x in logits]
