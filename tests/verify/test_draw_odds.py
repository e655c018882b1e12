"""The documented odds of shielding and framing (shardnet/verify/draw_odds.py) match the coordinator's actual
two-stage rule (`needs_referees`, `tally` in coordinator/disputes.py), enumerated over every ordered draw."""

from __future__ import annotations

from itertools import permutations

import pytest

from coordinator.dispute_answers import MIN_VERIFIERS, VerifierAnswer, needs_referees, tally
from coordinator.disputes import MAX_VERIFIERS
from shardnet.verify.draw_odds import draw_odds
from shardnet.wire.eip712 import CompactSignature

SIG = CompactSignature(b"\x01" * 32, b"\x02" * 32)


def _answer(name: str, guilty: bool) -> VerifierAnswer:
    return VerifierAnswer(name, 1, guilty, 3 if guilty else None, SIG if guilty else None)


def _slashed(order: tuple[str, ...], says_guilty: set[str]) -> tuple[bool, int]:
    """Run the coordinator's rule on one ordered draw of equal-stake verifiers: (slashed, passes)."""
    first = [_answer(v, v in says_guilty) for v in order[:MIN_VERIFIERS]]
    answers = list(first)
    if len(order) > MIN_VERIFIERS and needs_referees(first):
        answers += [_answer(v, v in says_guilty) for v in order[MIN_VERIFIERS:]]
    index, _ = tally(answers, len(order))
    return index is not None, len(answers)


@pytest.mark.parametrize("candidates", [2, 3, 4, 5, 6, 7])
def test_the_odds_are_those_of_the_coordinators_rule(candidates: int) -> None:
    names = [f"n{i}" for i in range(candidates)]
    drawn = min(MAX_VERIFIERS, candidates)
    orders = list(permutations(names, drawn))
    for colluders in range(candidates + 1):
        colluding = set(names[:colluders])
        honest = set(names[colluders:])
        shield = sum(not _slashed(o, honest)[0] for o in orders) / len(orders)  # a colluding cheat
        frame_runs = [_slashed(o, colluding) for o in orders]  # an honest accused
        frame = sum(s for s, _ in frame_runs) / len(orders)
        passes = sum(p for _, p in frame_runs) / len(orders)
        odds = draw_odds(candidates, colluders)
        assert odds.shield == pytest.approx(shield) and odds.frame == pytest.approx(frame)
        assert odds.passes_honest == pytest.approx(passes)


@pytest.mark.parametrize("candidates", [4, 9, 16])
def test_below_half_of_a_span_of_up_to_17_nodes_never_frames_and_shields_only_with_both_first(
    candidates: int,
) -> None:
    for colluders in range(candidates):
        odds = draw_odds(candidates, colluders)
        if 2 * colluders < candidates:
            assert odds.frame == 0.0
            assert odds.shield == pytest.approx(colluders * (colluders - 1) / (candidates * (candidates - 1)))
    assert draw_odds(candidates, 0).passes_honest == 2.0  # no colluder: exactly the first stage's 2 passes
