"""The coordinator's dashboard (`shardnet.dashboard`): the chain's snapshot plus what this coordinator knows itself,
its routing directory's health and measured times for each assignment (a down or excluded worker's span counts
as uncovered) and its own record of recent jobs (status, route, latency). Never a prompt or an output: only
token counts and the hashes the chain holds.

    GET /dashboard, /dashboard/assets/{name}, /dashboard/api/snapshot   (see shardnet.dashboard.web)
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from typing import Any

from aiohttp import web
from sqlalchemy import select
from sqlalchemy.orm import Session

from coordinator.lifecycle import OUTPUT_KNOWN, TERMINAL, JobState
from coordinator.router import DEFAULT_COMPUTE_PER_LAYER_S
from coordinator.service import CoordinatorService
from coordinator.state import HopRow, JobRow
from shardnet.dashboard.snapshot import ChainSnapshot, add_coverage
from shardnet.dashboard.web import install, one_refresh_at_a_time

#: Jobs of this coordinator's database shown (newest first)
RECENT_JOBS = 200
#: The coordinator's part is rebuilt at most this often, however many pages poll
MIN_INTERVAL_S = 1.0


class CoordinatorDashboard:
    """Builds the dashboard document: `ChainSnapshot` of the service's registry + the service's own state."""

    def __init__(self, service: CoordinatorService) -> None:
        self.service = service
        self.chain = ChainSnapshot(service.registry, min_interval_s=MIN_INTERVAL_S)
        self._doc: dict[str, Any] | None = None
        self._built_at = float("-inf")
        self._lock = asyncio.Lock()

    async def document(self) -> dict[str, Any]:
        async with self._lock:
            if self._doc is None or time.monotonic() - self._built_at >= MIN_INTERVAL_S:
                chain_doc = await asyncio.to_thread(self.chain.current)
                jobs = await asyncio.to_thread(self._recent_jobs)
                self._doc = self._merge(copy.deepcopy(chain_doc), jobs)
                self._built_at = time.monotonic()
            return self._doc

    def _merge(self, doc: dict[str, Any], jobs: list[dict[str, Any]]) -> dict[str, Any]:
        workers = {int(str(w["assignment_id"])): w for w in self.service.directory.describe()}
        for model in doc["models"]:
            for a in model["assignments"]:
                w = workers.get(int(a["assignment_id"]))
                if w is None:
                    continue
                layers = a["span"][1] - a["span"][0]
                measured = w["compute_per_layer_s"] != DEFAULT_COMPUTE_PER_LAYER_S
                a["health"] = {
                    "down": bool(w["down"]),
                    "excluded": bool(w["excluded"]),
                    "load": w["load"],
                    "rtt_s": w["rtt_s"],
                    "step_s": float(str(w["compute_per_layer_s"])) * layers if measured else None,
                }
                a["serving"] = a["chain_ok"] and not w["down"] and not w["excluded"] and not w["benched"]
            add_coverage(model)
        doc["source"] = "coordinator"
        doc["coordinator"] = {"address": self.service.account.address, "jobs": jobs}
        return doc

    def _recent_jobs(self) -> list[dict[str, Any]]:
        state = self.service.state
        with Session(state.engine, expire_on_commit=False) as s:
            rows = list(s.scalars(select(JobRow).order_by(JobRow.job_id.desc()).limit(RECENT_JOBS)))
            ids = [r.job_id for r in rows]
            hops: dict[int, list[HopRow]] = {}
            for h in s.scalars(select(HopRow).where(HopRow.job_id.in_(ids)).order_by(HopRow.hop_index)):
                hops.setdefault(h.job_id, []).append(h)
        out = []
        for row in rows:
            status = JobState(row.status)
            done = status in TERMINAL
            out.append(
                {
                    "job_id": row.job_id,
                    "status": row.status,
                    "done": done,
                    "prompt_tokens": row.prompt_tokens,
                    "output_token_count": len(json.loads(row.output_tokens))
                    if status in OUTPUT_KNOWN and row.output_tokens
                    else None,
                    "latency_s": round(row.updated_at - row.created_at, 3) if done else None,
                    "route": [
                        {"node": h.node, "span": [h.span_start, h.span_end], "reason": h.reason}
                        for h in hops.get(row.job_id, [])
                    ],
                }
            )
        return out


def mount(app: web.Application, service: CoordinatorService) -> None:
    """Mount the dashboard on the coordinator's app (GET only)."""
    install(app, one_refresh_at_a_time(CoordinatorDashboard(service).document))
