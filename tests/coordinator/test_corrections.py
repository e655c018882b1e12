"""The client's view of an after-the-fact check (coordinator/corrections.py): which shown tokens a correcting
re-run replaced, and what the status endpoint shows to the job's client and to anyone else."""

from __future__ import annotations

import asyncio

from coordinator.corrections import CHEAT_DETECTED, VERIFIED, CheckReport, replaced_tokens


def test_replaced_tokens_name_every_index_the_correct_run_differs_at() -> None:
    assert replaced_tokens([1, 2, 3], [1, 2, 3]) == []
    assert replaced_tokens([1, 2, 3], [1, 5, 3]) == [(1, 2, 5)]
    assert replaced_tokens([1, 2, 3, 4], [1, 2]) == [(2, 3, -1), (3, 4, -1)]  # the honest run stopped earlier
    assert replaced_tokens([1], [7, 8]) == [(0, 1, 7), (1, -1, 8)]  # it went on: shown -1, not given


def test_the_correction_is_for_the_jobs_client_only() -> None:
    report = CheckReport(7, CHEAT_DETECTED, hops_checked=1, verifier_passes=4, slashed=["0xabc"])
    report.correct_tokens, report.correct_text = [1, 5], "a e"
    report.replaced, report.answer_affected = replaced_tokens([1, 2], [1, 5]), True
    client = report.to_json(reveal=True)
    other = report.to_json(reveal=False)
    assert client["replaced"] == [{"index": 1, "shown": 2, "correct": 5}] and client["correct_text"] == "a e"
    assert "replaced" not in other and "correct_text" not in other and "correct_tokens" not in other
    assert (
        other["status"] == CHEAT_DETECTED and other["replaced_count"] == 1 and other["slashed"] == ["0xabc"]
    )
    event = report.error_event()["error"]
    assert event["type"] == "cheat_detected" and event["text"] == "a e"
    assert event["replaced"] == [{"index": 1, "streamed": 2, "correct": 5}]
    assert CheckReport(8, VERIFIED).to_json(reveal=True).keys() == other.keys()  # no correction to show


def test_a_failed_correcting_rerun_is_not_reported_as_the_same_tokens() -> None:
    """The re-run after a slash failed: the stream's event must not say the streamed tokens were right."""
    report = CheckReport(9, CHEAT_DETECTED, hops_checked=1, slashed=["0xabc"], answer_affected=True)
    report.note = "the correcting re-run failed: no route for layers 2:4"
    event = report.error_event()["error"]
    assert "same tokens" not in event["message"] and "stands" not in event["message"]
    assert "no route for layers 2:4" in event["message"] and "send the request again" in event["message"]
    assert event["text"] is None and event["replaced"] == []
    report.correct_tokens, report.correct_text = [1, 2], "a b"  # a re-run that agreed with what was streamed
    assert "the streamed text stands" in report.error_event()["error"]["message"]


def test_a_held_json_answer_never_carries_text_a_cheat_touched() -> None:
    """The tokens a held non-streaming answer gives: the re-run's after a cheat; none (an error instead) when the
    re-run failed, so an OpenAI client that ignores `shardnet_verification` never takes wrong text as the answer."""
    from coordinator.corrections import held_tokens

    shown = [1, 2, 3]
    assert held_tokens(None, shown) == shown and held_tokens(CheckReport(1, VERIFIED), shown) == shown
    caught = CheckReport(2, CHEAT_DETECTED, slashed=["0xabc"], answer_affected=True)
    assert held_tokens(caught, shown) is None  # the correcting re-run failed
    caught.correct_tokens = [1, 5]
    assert held_tokens(caught, shown) == [1, 5]
    elsewhere = CheckReport(3, CHEAT_DETECTED, slashed=["0xabc"], answer_affected=False)
    assert held_tokens(elsewhere, shown) == shown  # the slashed hop served only a replaced run


def test_a_finished_report_keeps_no_copy_of_the_jobs_tokens() -> None:
    """Up to MAX_REPORTS reports stay in memory: one must not keep the tokens the client was shown (a long job's
    worth each, ~36 bytes a token as Python ints) once nothing needs them."""
    from types import SimpleNamespace

    from coordinator.corrections import Correction
    from coordinator.hops import JobHops
    from coordinator.job_checks import JobChecks

    directory = SimpleNamespace(
        endpoint=lambda _a: None,
        exclude=lambda _a: None,
        mark_down=lambda *_a: None,
    )
    ctx = SimpleNamespace(router=SimpleNamespace(directory=directory), registry=None, account=None)
    ctx.adapters = SimpleNamespace(for_job=lambda _j: None)
    checks = JobChecks(ctx, share=0)  # type: ignore[arg-type]
    shown = list(range(1000, 101_000))

    async def rerun() -> list[int]:
        return shown

    async def start() -> None:  # start() runs on the coordinator's loop (it schedules the share's refund)
        checks.start(5, 0, JobHops(5, [], 64), "0x", Correction(shown, rerun, lambda t: ""))
        await checks.wait()  # the refund fails here (no registry): wait() swallows it

    asyncio.run(start())
    report = checks.reports[5]
    assert report.status == "not_verified" and report.done
    held = [v for v in vars(report).values() if isinstance(v, list) and len(v) >= len(shown)]
    assert held == [], "the report keeps a copy of the shown tokens"
