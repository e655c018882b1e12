"""The odds a colluding operator shields its own cheat or frames an honest node under the two-stage check.

The check (coordinator/disputes.py): the registry draws up to `max_drawn` verifiers without replacement,
stake-weighted, among the `candidates` other nodes staked on the span; the first `first_stage` judge; unanimous
innocent closes the check, anything else asks the rest of the draw (the referees); the slash needs guilty
verdicts carrying more than half of the stake of all drawn verifiers. The colluders hold `colluders` of the
candidates. With equal stakes every ordered draw is equally likely, so the counts of colluders among the first
stage and among the referees are hypergeometric; the odds below are exact for equal stakes.

- shield: the accused is a colluder that cheated; honest verifiers say guilty, colluders innocent.
- frame: the accused is honest; honest verifiers say innocent, colluders guilty (on one leaf).

With unequal stakes and s the colluders' share of the candidates' stake, the first stage is all colluders with
probability at most s**2 (each pick without replacement is a colluder with probability at most s).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb


@dataclass(frozen=True)
class DrawOdds:
    shield: float  # a colluding cheat is not slashed
    frame: float  # an honest node is slashed
    escalate_honest: float  # an honest node's check asks the referees (colluders say guilty when drawn first)
    passes_honest: float  # expected verifier passes of an honest node's check with colluders framing


def _hyper(total: int, marked: int, picks: int, k: int) -> float:
    """P(k marked among `picks` drawn without replacement from `total` of which `marked` are marked)."""
    if k < 0 or k > picks or k > marked or picks - k > total - marked:
        return 0.0
    return comb(marked, k) * comb(total - marked, picks - k) / comb(total, picks)


def draw_odds(candidates: int, colluders: int, *, first_stage: int = 2, max_drawn: int = 16) -> DrawOdds:
    """Exact odds for `candidates` equal-stake nodes besides the accused, `colluders` of them one operator's."""
    if not 0 <= colluders <= candidates or candidates < first_stage:
        raise ValueError(
            f"need 0 <= colluders ({colluders}) <= candidates ({candidates}) and >= {first_stage}"
        )
    drawn = min(max_drawn, candidates)
    referees = drawn - first_stage
    shield = frame = escalate = passes = 0.0
    for x1 in range(first_stage + 1):
        p1 = _hyper(candidates, colluders, first_stage, x1)
        if p1 == 0.0:
            continue
        for x2 in range(referees + 1):
            p2 = _hyper(candidates - first_stage, colluders - x1, referees, x2)
            if p2 == 0.0:
                continue
            p = p1 * p2
            colluding = x1 + x2
            # cheat shielded: closed at once when the first stage is all colluders, else honest guilty stake
            # must exceed half of the drawn stake
            if x1 == first_stage or 2 * (drawn - colluding) <= drawn:
                shield += p
            # honest accused: escalated only when a colluder is in the first stage (it says guilty)
            escalated = x1 > 0 and referees > 0
            if x1 > 0 and 2 * (colluding if escalated else x1) > (drawn if escalated else first_stage):
                frame += p
            escalate += p if escalated else 0.0
            passes += p * (drawn if escalated else first_stage)
    return DrawOdds(shield, frame, escalate, passes)


def odds_table(candidates: list[int], shares: list[float]) -> list[tuple[int, int, float, DrawOdds]]:
    """Rows (candidates, colluders, their share, odds) for each candidate count and colluding share."""
    rows = []
    for n in candidates:
        for s in shares:
            c = round(s * n)
            rows.append((n, c, c / n, draw_odds(n, c)))
    return rows


if __name__ == "__main__":
    print(
        f"{'others on span':>14s} {'colluders':>9s} {'share':>6s} {'shield':>8s} {'frame':>8s} {'passes':>6s}"
    )
    for n, c, s, o in odds_table([4, 10, 20, 100], [0.1, 0.2, 0.3, 0.4, 0.5]):
        print(f"{n:14d} {c:9d} {s:6.2f} {o.shield:8.4f} {o.frame:8.4f} {o.passes_honest:6.2f}")
