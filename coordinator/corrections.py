"""What the after-the-fact check of a job came to, for its client: a cheat found after the settlement is not silent.

`JobChecks` keeps one `CheckReport` per job it started a check for. When a hop is slashed, the job is re-run on a
fresh route (the slashed node is out of routing by then) with the same prompt, sampling parameters and seed, so
greedy and seeded jobs give the tokens honest workers make; the report then carries those tokens, their text,
and each token the client was shown that the re-run replaced (index, shown, correct; correct -1: not part of
the answer). The client reads it on GET /v1/jobs/{id} ("verification"; tokens and text only for the job's
client), or waits for it: an OpenAI request with `hold_until_verified` (or a coordinator started with
--hold-until-verified) keeps a stream's final event, or the whole non-streaming answer, until the check has
finished, and gets the `cheat_detected` error event (stream) or the corrected answer with the report (JSON).

The reports live in this process (the slash and its evidence are in the database and on chain); a restarted
coordinator answers "unknown" for jobs checked before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from coordinator.hops import JobHops

HOLD_TIMEOUT_S = 900.0  # a held answer waits at most this long for its check (then it goes out, "pending")
MAX_REPORTS = 10_000  # reports kept in memory (the oldest are dropped)

PENDING = "pending"
VERIFIED = "verified"  # every hop judged innocent
PARTLY_VERIFIED = "partly_verified"  # the hops judged were innocent, others could not be judged
NOT_VERIFIED = "not_verified"  # no hop could be judged, or the job was not among those checked
CHEAT_DETECTED = "cheat_detected"
CHECK_FAILED = "check_failed"


def replaced_tokens(shown: Sequence[int], correct: Sequence[int]) -> list[tuple[int, int, int]]:
    """(index, shown, correct) for every shown token the correct run differs at; -1: the correct run had stopped."""
    return [
        (i, token, correct[i] if i < len(correct) else -1)
        for i, token in enumerate(shown)
        if i >= len(correct) or correct[i] != token
    ] + [(i, -1, correct[i]) for i in range(len(shown), len(correct))]


@dataclass
class CheckReport:
    """One job's after-the-fact check, as its client sees it."""

    job_id: int
    status: str = PENDING
    hops_checked: int = 0
    hops_unchecked: list[str] = field(default_factory=list)  # why each unjudged hop was not judged
    verifier_passes: int = 0  # recomputations of hops by drawn verifiers (2 per innocent hop)
    slashed: list[str] = field(default_factory=list)  # nodes slashed for this job
    slash_txs: list[str] = field(default_factory=list)
    correct_tokens: list[int] | None = None  # the honest re-run's tokens (a cheat was found)
    correct_text: str | None = None
    replaced: list[tuple[int, int, int]] = field(default_factory=list)
    answer_affected: bool = False  # a slashed hop served the run whose tokens the client was given
    note: str = ""

    @property
    def done(self) -> bool:
        return self.status != PENDING

    def to_json(self, *, reveal: bool) -> dict[str, Any]:
        """The report; token ids and text only with `reveal` (the job's client asked)."""
        view: dict[str, Any] = {
            "status": self.status,
            "done": self.done,
            "hops_checked": self.hops_checked,
            "hops_unchecked": self.hops_unchecked,
            "verifier_passes": self.verifier_passes,
            "slashed": self.slashed,
            "slash_txs": self.slash_txs,
            "replaced_count": len(self.replaced),
            "answer_affected": self.answer_affected,
            "note": self.note,
        }
        if reveal and self.status == CHEAT_DETECTED:
            view["replaced"] = [{"index": i, "shown": a, "correct": b} for i, a, b in self.replaced]
            view["correct_tokens"] = self.correct_tokens
            view["correct_text"] = self.correct_text
        return view

    def error_event(self) -> dict[str, Any]:
        """The OpenAI stream's error event for a cheat found after the tokens were streamed."""
        first = self.replaced[0][0] if self.replaced else None
        if self.correct_tokens is None:  # no re-run, or it failed: nothing says which tokens were right
            where = (
                f"no correct completion could be made ({self.note}); treat the streamed text as wrong and "
                "send the request again"
            )
        elif self.replaced:
            where = (
                f"the job was re-run on honest workers: {len(self.replaced)} streamed tokens from token "
                f"{first} on were wrong; the correct completion is in 'text' (the replaced tokens in "
                "'replaced'; correct -1: not part of the answer)"
            )
        else:
            where = "the job was re-run on honest workers and gave the same tokens; the streamed text stands"
        return {
            "error": {
                "message": f"after the job was settled, drawn verifiers found that {', '.join(self.slashed)} "
                f"sent wrong outputs (slashed); {where}",
                "type": "cheat_detected",
                "replaced": [{"index": i, "streamed": a, "correct": b} for i, a, b in self.replaced],
                "text": self.correct_text,
                "slashed": self.slashed,
            }
        }


def held_tokens(report: CheckReport | None, tokens: list[int]) -> list[int] | None:
    """The tokens a held (non-streaming) answer carries: the honest re-run's when a cheat touched the answer, the
    job's own otherwise; None when a cheat touched it and no correct tokens exist (no re-run, or it failed):
    answer `report.error_event()` then, never the wrong text an OpenAI client would take as the answer."""
    if report is None or report.status != CHEAT_DETECTED or not report.answer_affected:
        return tokens
    return report.correct_tokens


class _Result(Protocol):
    tokens: list[int]


class _Runner(Protocol):
    """What `rerun_tokens` needs of `coordinator.jobs.JobRunner`."""

    router: Any

    def generate(
        self,
        job_id: int,
        model: Any,
        job_hops: JobHops,
        prompt_ids: list[int],
        max_tokens: int,
        params: Any,
        on_token: Any,
        first_route: list[Any],
    ) -> Awaitable[_Result]: ...


@dataclass
class Correction:
    """How to correct a job whose hop was slashed: the tokens the client was shown, a re-run on a fresh route
    that returns the honest tokens, and the model's decoder."""

    shown: list[int]
    rerun: Callable[[], Awaitable[list[int]]]
    decode: Callable[[list[int]], str]


async def rerun_tokens(
    runner: _Runner, job_id: int, model: Any, prompt_ids: list[int], max_tokens: int, params: Any
) -> list[int]:
    """The job generated again on a route chosen now (a slashed node is out of routing by then), streamed to
    nobody; the same sampling seed, so a greedy or seeded job gives the tokens honest workers make."""
    route = runner.router.route(model.info.model_id, model.num_layers)
    job_hops = JobHops(
        job_id, [(h.address, h.span) for h in route], max_positions=len(prompt_ids) + max_tokens
    )
    result = await runner.generate(job_id, model, job_hops, prompt_ids, max_tokens, params, None, route)
    return list(result.tokens)


KEEPALIVE_S = 10.0  # a held stream gets an SSE comment this often while its check runs


async def hold_stream(
    verified: Callable[[], Awaitable[CheckReport | None]], write: Callable[[bytes], Awaitable[None]]
) -> CheckReport | None:
    """Wait for a streamed job's check, writing SSE comments meanwhile (proxies keep the stream open; OpenAI
    clients skip comments); then a comment naming the outcome. A client that goes away ends the wait only."""
    waiting = asyncio.ensure_future(verified())
    try:
        while not (await asyncio.wait({waiting}, timeout=KEEPALIVE_S))[0]:
            await write(b": waiting for the job's verification\n\n")
    finally:
        if not waiting.done():
            waiting.cancel()
    report = waiting.result()
    await write(f": verification {report.status if report else 'unknown'}\n\n".encode())
    return report
