"""Every settled job's hops checked after the fact (`coordinator.disputes`), in the background of the job runner.

A hop is checked when the coordinator relayed all its steps (its packages rebuild the worker's signed root) and
at least `MIN_VERIFIERS` other live workers serve its span (else the registry could not draw enough verifiers
and no slash could follow). The accused's dtype (its /health) picks the tolerance; one that cannot be read is
checked at the loosest calibrated tolerance, so honest drift never slashes. The last hop of the finished run
is also checked on the tokens it made the client see (`shown_tokens`). Faults (a verifier refusing,
timing out, or outvoted by the referees) mark the verifier down and are recorded; a slash excludes the node from
routing for good. Then the job's drawn verifiers that signed a verdict are paid from its held verification share
(`verifier_pay`); a job nobody checks gets its share back at once. A hop whose check fails (an exception: a chain
read, an answer handled badly) is reported unchecked with why; the other hops are still judged and their verdicts
paid, so nobody who can make one hop's check fail shields the others.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any

from coordinator.corrections import (
    CHEAT_DETECTED,
    CHECK_FAILED,
    HOLD_TIMEOUT_S,
    MAX_REPORTS,
    NOT_VERIFIED,
    PARTLY_VERIFIED,
    VERIFIED,
    CheckReport,
    Correction,
    replaced_tokens,
)
from coordinator.dispute_answers import MIN_VERIFIERS, DisputeOutcome
from coordinator.dispute_records import outcome_record, record_hash
from coordinator.disputes import DRAW_DELAY, DisputeRunner
from coordinator.hop_facts import job_drawn, shown_tokens, unjudgeable, worker_dtype
from coordinator.hop_sessions import PipelineContext
from coordinator.hops import JobHops
from coordinator.verifier_pay import VerifierPayer, hop_verdicts
from shardnet.chain.tx import wait_for_receipt

log = logging.getLogger(__name__)

MAX_FAULTS = 3  # refused, timed-out or outvoted checks within FAULT_WINDOW_S: out of routing, first stages
FAULT_WINDOW_S = 24 * 3600.0  # a fault counts this long: a restart or a slow moment months ago is forgotten
MAX_TRACKED = 4096  # verifiers whose recent faults are kept (the least recently faulted forgotten first)


class JobChecks:
    """Starts the after-the-fact check of a `share` of the settled jobs (0 turns them off)."""

    def __init__(
        self,
        ctx: PipelineContext,
        *,
        share: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        pay_batch_s: float = 0.0,
    ) -> None:
        """`pay_batch_s`: the verifiers' payments of jobs checked within this many seconds go in one payVerifiers."""
        self.ctx = ctx
        self.payer = VerifierPayer(ctx.registry, pay_batch_s)
        self.clock = clock
        self.share = share
        self.enabled = share > 0
        directory = ctx.router.directory
        self.disputes = DisputeRunner(
            ctx.registry,
            ctx.account,
            directory.endpoint,
            on_fault=self._fault,
            on_slashed=directory.exclude,
            on_outvoted=self._fault,
            excluded=self._faulty,  # not directory.is_excluded: live-check sybils can exclude honest nodes
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        # verifier (lower case) -> when its last (at most MAX_FAULTS) faults were, the least recently faulted first
        self.faults: OrderedDict[str, list[float]] = OrderedDict()
        directory.benched = self._faulty  # out of routing while its recent faults last, not for good
        self.reports: dict[int, CheckReport] = {}  # job id -> its check's outcome (coordinator.corrections)
        self._by_job: dict[int, asyncio.Task[list[DisputeOutcome]]] = {}

    def start(
        self, job_id: int, model_id: int, job_hops: JobHops, settle_tx: str, fix: Correction | None = None
    ) -> None:
        """Check the job's hops in the background; `fix`: how to re-run it should a hop be slashed."""
        if not self.enabled or self.ctx.adapters.for_job(job_id) is not None:
            # an adapter's job: verifiers would replay without it (never framed)
            self.unchecked(
                job_id,
                settle_tx,
                "checks are off" if not self.enabled else "ran with a LoRA adapter verifiers lack",
            )
            return
        report = self._report(job_id)  # small: the shown tokens stay in `fix`, held only while the check runs
        task = asyncio.ensure_future(self._check(job_id, model_id, job_hops, settle_tx, report, fix))
        self._tasks.add(task)
        self._by_job[job_id] = task
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _t: self._by_job.pop(job_id, None))

    def unchecked(self, job_id: int, settle_tx: str, why: str) -> None:
        """A settled job nobody checks (`why`): reported so, and its verification share goes back to the client at
        once (in the background), not after the draw's reach."""
        report = self._report(job_id)
        report.status, report.note = NOT_VERIFIED, why
        log.info("job %d: not checked after the fact: %s", job_id, why)
        self._in_background(self.payer.return_share(job_id, settle_tx))

    def _in_background(self, payment: Coroutine[Any, Any, Any]) -> None:
        """A payment sent while the check's report is already final (a held answer need not wait for its batch)."""
        task = asyncio.ensure_future(payment)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _report(self, job_id: int) -> CheckReport:
        while len(self.reports) >= MAX_REPORTS:
            self.reports.pop(next(iter(self.reports)))
        report = self.reports[job_id] = CheckReport(job_id)
        return report

    async def verified(self, job_id: int, timeout_s: float = HOLD_TIMEOUT_S) -> CheckReport | None:
        """The job's report once its check has finished (or after `timeout_s`, still pending); None: no check
        was started for it by this process."""
        task = self._by_job.get(job_id)
        if task is not None:
            await asyncio.wait({task}, timeout=timeout_s)
        return self.reports.get(job_id)

    async def _check(
        self,
        job_id: int,
        model_id: int,
        job_hops: JobHops,
        settle_tx: str,
        report: CheckReport,
        fix: Correction | None,
    ) -> list[DisputeOutcome]:
        try:
            outcomes = await self.run(job_id, model_id, job_hops, settle_tx, report)
            if report.status == CHECK_FAILED:
                return outcomes
            judged = [o for o in outcomes if o.answers]
            report.hops_unchecked += [f"{o.node.lower()}: {o.note}" for o in outcomes if not o.answers]
            report.hops_checked = len(judged)
            report.verifier_passes = sum(o.passes for o in judged)
            slashed = [o for o in judged if o.slashed]
            report.slashed = list(dict.fromkeys(o.node.lower() for o in slashed))  # a node slashed once a job
            report.slash_txs = [o.tx_hash for o in slashed if o.tx_hash]
            if not slashed:
                all_judged = len(judged) == len(job_hops.hops)
                report.status = VERIFIED if all_judged else PARTLY_VERIFIED if judged else NOT_VERIFIED
                return outcomes
            report.status = CHEAT_DETECTED
            served_answer = {
                node.lower() for i, (node, _span) in enumerate(job_hops.hops) if job_hops.final_steps.get(i)
            }
            report.answer_affected = bool(served_answer & set(report.slashed))
            if (
                fix is not None and not report.answer_affected
            ):  # caught live too: the answer came from a re-run
                report.correct_tokens, report.correct_text = list(fix.shown), fix.decode(list(fix.shown))
                report.note = "the slashed hops served only runs the live check replaced; the answer stands"
                return outcomes
            if fix is None:
                report.note = "no re-run was possible here"
                return outcomes
            log.warning("job %d: %s slashed after the settlement: re-running it", job_id, report.slashed)
            try:
                correct = await fix.rerun()
            except Exception as exc:  # noqa: BLE001 - the report says what went wrong; the slash stands
                log.exception("job %d: the correcting re-run failed", job_id)
                report.note = f"the correcting re-run failed: {exc}"[:300]
                return outcomes
            report.correct_tokens = correct
            report.correct_text = fix.decode(correct)
            report.replaced = replaced_tokens(fix.shown, correct)
            log.warning("job %d: the re-run replaced %d shown tokens", job_id, len(report.replaced))
            return outcomes
        except Exception as exc:
            log.exception("job %d: the after-the-fact check failed", job_id)
            report.status, report.note = CHECK_FAILED, str(exc)[:300]
            return []

    async def wait(self) -> None:
        """Wait for the checks started so far (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def run(
        self, job_id: int, model_id: int, job_hops: JobHops, settle_tx: str, report: CheckReport | None = None
    ) -> list[DisputeOutcome]:
        """Judge the job's judgeable hops (`report`, if given, gets why the others were not judged)."""
        unchecked = report.hops_unchecked if report is not None else []
        directory = self.ctx.router.directory
        todo = []
        for i, (node, span) in enumerate(job_hops.hops):
            signed = job_hops.commitments.get(i)
            why_not = unjudgeable(job_hops, i)
            if why_not:
                log.info("job %d: hop %d (%s) not checked: %s", job_id, i, node, why_not)
                unchecked.append(f"hop {i}: {why_not}")
                continue
            assert signed is not None
            if len(directory.serving(model_id, span, besides={node})) < MIN_VERIFIERS:
                unchecked.append(f"hop {i}: fewer than {MIN_VERIFIERS} other workers serve {span}")
                log.info("job %d: hop %d (%s) not checked: %s", job_id, i, node, unchecked[-1])
                continue
            todo.append((i, node, span, signed, await job_hops.step_work(i), shown_tokens(job_hops, i)))
        if not todo:
            self._in_background(self.payer.return_share(job_id, settle_tx))
            return []
        registry = self.disputes.registry
        try:
            receipt = await asyncio.to_thread(wait_for_receipt, registry.w3, settle_tx)
            raw = receipt["blockNumber"]  # a raw JSON-RPC receipt: hex
            close_block = int(raw, 16) if isinstance(raw, str) else int(raw)
            record = await asyncio.to_thread(registry.job_record, job_id)
            if not await self.disputes.wait_for_draw(close_block):
                log.warning("job %d: no block %d yet; its hops are not checked", job_id, close_block + 2)
                unchecked.append(f"no block {close_block + DRAW_DELAY} to draw verifiers from")
                return []
            block = await asyncio.to_thread(registry.w3.eth.get_block, close_block + DRAW_DELAY)
            if not job_drawn(bytes(block["hash"]), job_id, self.share):
                log.info("job %d: not among the %.0f%% of jobs checked", job_id, 100 * self.share)
                unchecked.append(f"not among the {100 * self.share:.0f}% of jobs checked")
                self._in_background(self.payer.pay(job_id, record, close_block, []))  # the share back
                return []
            outcomes = []
            paid = []
            for i, node, span, signed, work, shown in todo:
                # counted now, after the draw's blocks: a replica down a moment while the job ran is back
                if len(self.ctx.router.replicas(model_id, span, besides={node})) < MIN_VERIFIERS:
                    why = f"fewer than {MIN_VERIFIERS} other live workers serve {span}"
                    log.info("job %d: hop %d (%s) not checked: %s", job_id, i, node, why)
                    unchecked.append(f"hop {i}: {why}")
                    continue
                try:  # one hop's failure is its own: the other hops are still judged, the verdicts still paid
                    dtype = await worker_dtype(directory.endpoint(signed.node))
                    outcome = await self.disputes.check_hop(
                        job_id, record, close_block, signed, work, dtype, shown
                    )
                except Exception as exc:  # noqa: BLE001 - reported as this hop's, the check goes on
                    log.exception("job %d: the check of hop %d (%s) failed", job_id, i, node)
                    unchecked.append(f"hop {i}: its check failed: {exc}"[:300])
                    continue
                outcomes.append(outcome)
                leaves = [w.leaf() for w in work]
                paid.append(hop_verdicts(signed, outcome.answers, outcome.picks, leaves))
                try:
                    self._record(job_id, i, outcome)
                except Exception:  # noqa: BLE001 - the outcome stands (reported and paid), only its record is lost
                    log.exception("job %d: the outcome of hop %d (%s) could not be recorded", job_id, i, node)
            self._in_background(self.payer.pay(job_id, record, close_block, paid))
            return outcomes
        except Exception as exc:
            log.exception("job %d: the after-the-fact check failed", job_id)
            if report is not None:
                report.status, report.note = CHECK_FAILED, f"the check failed: {exc}"[:300]
            return []

    def fault_count(self, verifier: str) -> int:
        """The verifier's faults here within the last FAULT_WINDOW_S (at most MAX_FAULTS)."""
        now = self.clock()
        return sum(now - t < FAULT_WINDOW_S for t in self.faults.get(verifier.lower(), []))

    def _faulty(self, verifier: str) -> bool:
        """Whether a verifier reached MAX_FAULTS here within FAULT_WINDOW_S (then it is never in a check's first
        stage, nor routed to). Only its own refusals, time-outs and outvoted verdicts count: an honest verifier
        gets there only if it cannot keep up, or against half of the drawn stake, so colluders below half cannot
        empty the first stage of honest ones. Expiry and the MAX_TRACKED bound only ever forget faults: they can
        let a framer back into the first stage after a window, never push an honest verifier out of it."""
        return self.fault_count(verifier) >= MAX_FAULTS

    def _fault(self, verifier: str, why: str) -> None:
        """A drawn verifier that refused, timed out or was outvoted by the referees: marked down (out of routing
        until its /health answers); with MAX_FAULTS of them within FAULT_WINDOW_S, out of routing and of first
        stages until the oldest of them expires."""
        key, now = verifier.lower(), self.clock()
        recent = [t for t in self.faults.pop(key, []) if now - t < FAULT_WINDOW_S]
        self.faults[key] = times = (recent + [now])[-MAX_FAULTS:]  # moved to the end: the latest to fault
        while self.faults and (
            len(self.faults) > MAX_TRACKED or now - next(iter(self.faults.values()))[-1] >= FAULT_WINDOW_S
        ):
            self.faults.popitem(last=False)  # all of its faults expired, or too many verifiers tracked
        log.warning("verifier %s did not judge a package (%s): fault %d", verifier, why, len(times))
        directory = self.ctx.router.directory
        directory.mark_down(verifier, f"verification refused, timed out or outvoted: {why}")
        if len(times) >= MAX_FAULTS:
            log.warning(
                "verifier %s: %d faults within %.0f h: out of routing until the oldest expires",
                verifier,
                len(times),
                FAULT_WINDOW_S / 3600,
            )

    def _record(self, job_id: int, hop_index: int, outcome: DisputeOutcome) -> None:
        state = self.ctx.state
        for a in outcome.answers:
            state.add_verification(
                job_id=job_id,
                hop_index=hop_index,
                step_index=-1 if a.leaf_index is None else a.leaf_index,
                node=outcome.node.lower(),
                replica=a.verifier.lower(),
                metric=0.0,
                agree=a.guilty is False,
                outlier=outcome.node.lower() if a.guilty else None,
            )
        if outcome.slashed:
            record = outcome_record(job_id, hop_index, outcome)
            state.add_slash(
                job_id=job_id,
                node=outcome.node,
                evidence_hash=record_hash(record),
                evidence=record,
                tx_hash=outcome.tx_hash,
            )
        log.info(
            "job %d: hop %d (%s) checked: %s",
            job_id,
            hop_index,
            outcome.node,
            "slashed" if outcome.slashed else outcome.note or "innocent",
        )
