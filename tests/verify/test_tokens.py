"""The last hop's shown tokens: checked against recomputed logits, and an unsupported one attributed to the
hop only when its own committed logits made it (`shardnet.verify.tokens`)."""

from __future__ import annotations

import pytest
import torch

from shardnet.verify.fingerprint import make_fingerprint
from shardnet.verify.sampler import job_seed, sample_token
from shardnet.verify.tokens import ShownTokens, TokensError, check_shown_tokens, committed_argmax
from shardnet.verify.tolerance import tolerance_for

SEED = job_seed(31337, "0x" + "11" * 20, 1)
FP32 = tolerance_for("float32")


def _reference(steps: int = 4, vocab: int = 40) -> torch.Tensor:
    """Logits with a clear winner per step (token 3 + step, 2 above the runner-up token 10 + step)."""
    ref = torch.randn(steps, vocab, generator=torch.Generator().manual_seed(1))
    for s in range(steps):
        ref[s, 3 + s] = 8.0
        ref[s, 10 + s] = 6.0
    return ref


def _fingerprints(sent: torch.Tensor) -> list[bytes]:
    return [make_fingerprint(row.reshape(1, 1, -1)) for row in sent]


def test_honest_greedy_tokens_pass() -> None:
    ref = _reference()
    found = check_shown_tokens(ShownTokens([3, 4, 5, 6]), ref, _fingerprints(ref), FP32, SEED)
    assert found.checked == 4 and found.unsupported == [] and found.by_hop == [] and found.not_sent == []


def test_a_substituted_token_the_hop_made_is_the_hops_and_one_it_did_not_make_the_coordinators() -> None:
    ref = _reference()
    cheat = ref.clone()
    cheat[2, 12] = (
        9.0  # the last hop raises the runner-up above the winner at step 2 and commits what it sent
    )
    found = check_shown_tokens(ShownTokens([3, 4, 12, 6]), ref, _fingerprints(cheat), FP32, SEED)
    assert found.unsupported == [2] and found.by_hop == [2] and found.not_sent == []
    # an honest hop, and a coordinator that shows the runner-up at step 1: not the hop's
    found = check_shown_tokens(ShownTokens([3, 11, 5, 6]), ref, _fingerprints(ref), FP32, SEED)
    assert found.unsupported == [1] and found.by_hop == [] and found.not_sent == [1]


def test_a_fingerprint_that_cannot_prove_the_argmax_attributes_nothing() -> None:
    ref = _reference()
    ref[0, 20] = -30.0  # the largest |logit| is negative: the committed top-2 do not show the argmax
    assert committed_argmax(_fingerprints(ref)[0]) is None
    assert committed_argmax(_fingerprints(ref)[1]) == 4
    found = check_shown_tokens(ShownTokens([10, 4, 5, 6]), ref, _fingerprints(ref), FP32, SEED)
    assert found.unsupported == [0] and found.unattributed == [0] and not found.by_hop and not found.not_sent


def test_sampled_tokens_are_the_seeded_draws() -> None:
    ref = torch.randn(6, 30, generator=torch.Generator().manual_seed(2))
    drawn = [sample_token(ref[s], SEED, s, 0.9, 0.95) for s in range(6)]
    shown = ShownTokens(drawn, temperature=0.9, top_p=0.95)
    assert check_shown_tokens(shown, ref, _fingerprints(ref), FP32, SEED).unsupported == []
    other = ShownTokens([*drawn[:3], (drawn[3] + 1) % 30, *drawn[4:]], temperature=0.9, top_p=0.95)
    found = check_shown_tokens(other, ref, _fingerprints(ref), FP32, SEED)
    assert found.unsupported == [3] and found.unattributed == [3]  # sampled: nobody is slashed for it
    # another job's seed draws other tokens: they are not this job's
    wrong_seed = job_seed(31337, "0x" + "11" * 20, 2)
    assert check_shown_tokens(shown, ref, _fingerprints(ref), FP32, wrong_seed).unsupported


@pytest.mark.parametrize(
    "data",
    [
        [1, 2],
        {"tokens": []},
        {"tokens": [1, -2]},
        {"tokens": [1, True]},
        {"tokens": [1], "temperature": -1},
        {"tokens": [1], "top_p": 0},
        {"tokens": [1], "seed": 2**63},
        {"tokens": [1], "temperature": "hot"},
        {"tokens": list(range(9))},
    ],
)
def test_malformed_shown_tokens_are_refused(data: object) -> None:
    with pytest.raises(TokensError):
        ShownTokens.from_json(data, max_steps=8)


def test_shown_tokens_round_trip_and_must_match_the_steps() -> None:
    shown = ShownTokens([1, 2], temperature=0.5, top_p=0.9, seed=7)
    assert ShownTokens.from_json(shown.to_json(), max_steps=8) == shown
    with pytest.raises(TokensError, match="one token per step"):
        check_shown_tokens(shown, _reference(3), _fingerprints(_reference(3)), FP32, SEED)
