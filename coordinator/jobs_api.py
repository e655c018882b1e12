"""The jobs API: prompts for jobs paid on chain by clients, and what the coordinator knows of each job.

POST /v1/jobs/{id}/prompt   {"prompt", "temperature"?, "top_p"?, "seed"?, "ignore_eos"?, "chat"?}  -> 202 the job,
                            only if X-Shardnet-Auth is the job client's signature of exactly this prompt and these
                            sampling parameters for this job, not expired (`shardnet.job_auth.sign_prompt_handover`);
                            else 401
GET  /v1/jobs/{id}          status (a `coordinator.lifecycle.JobState`), route, commitments (read from the
                            chain), and the output once generated if X-Shardnet-Auth is the job client's
                            signature of `shardnet.job_auth.output_read_message(id, expires_at)`, not expired (`sign_output_read`);
                            "verification": the after-the-fact check (`coordinator.corrections.CheckReport`:
                            pending, verified, ..., cheat_detected with the corrected tokens and text for the client)
GET  /v1/jobs?client=0x…    the jobs this coordinator knows (without outputs)
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from coordinator import training_api
from coordinator.adapters import AdapterFile
from coordinator.api_models import MAX_JOB_ID, PromptHandOver, parse_job_id, validation_error
from coordinator.http_common import SERVICE, chain_error, error, json_body
from coordinator.lifecycle import OUTPUT_KNOWN, TERMINAL, JobState
from coordinator.scheduler import PromptRejected
from coordinator.service import CoordinatorService
from coordinator.state import JobRow
from shardnet.chain.errors import ChainError, ChainUnavailable
from shardnet.errors import ConfigError, ShardnetError
from shardnet.finetune.adapter_file import AdapterError
from shardnet.job_auth import AUTH_HEADER, output_reader, prompt_handover_signer

log = logging.getLogger(__name__)


def job_view(service: CoordinatorService, row: JobRow, *, reveal: bool = False) -> dict[str, Any]:
    """The JSON of a job (GET /v1/jobs/{id}); the output only with `reveal` (the job's client asked)."""
    hops = service.state.hops(row.job_id)
    generated = JobState(row.status) in OUTPUT_KNOWN
    return {
        "job_id": row.job_id,
        "status": row.status,
        "done": JobState(row.status) in TERMINAL,
        "model_id": row.model_id,
        "client": row.client,
        "max_tokens": row.max_tokens,
        "prompt_tokens": row.prompt_tokens,
        "output": row.output if generated and reveal else None,
        "output_tokens": json.loads(row.output_tokens)
        if generated and reveal and row.output_tokens
        else None,
        "output_hidden": generated and not reveal,
        "output_hash": row.output_hash,
        "finish_reason": row.finish_reason,
        "error": row.error,
        "finalize_tx": row.tx_finalize,
        "route": [
            {
                "hop": h.hop_index,
                "node": h.node,
                "endpoint": h.endpoint,
                "span": [h.span_start, h.span_end],
                "positions": h.positions,
                "layer_tokens": h.layer_tokens,
                "reason": h.reason,
            }
            for h in hops
        ],
    }


def _bad_job_id(text: str) -> web.Response:
    return error(
        400,
        f"the job id must be a whole number from 1 to {MAX_JOB_ID}, not {text[:40]!r}",
        param="job_id",
        code="invalid_job_id",
    )


async def post_prompt(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    job_id = parse_job_id(request.match_info["job_id"])
    if job_id is None:
        return _bad_job_id(request.match_info["job_id"])
    raw = await json_body(request)
    try:
        body = PromptHandOver.model_validate(raw)
    except ValidationError as exc:
        return validation_error(exc)
    signer = prompt_handover_signer(request.headers.get(AUTH_HEADER), job_id, body.signed_body())
    desk = request.app.get(training_api.DESK)
    if desk is not None and job_id in desk.routes:  # one job, one use of its escrow
        return error(409, f"job {job_id} was routed for fine-tuning: pay a new job for this prompt")
    try:
        adapter = await _job_adapter(service, job_id, body.adapter) if signer else None
        row = await service.jobs.accept_prompt(
            job_id, body.prompt, body.sampling(chat=body.chat), signer=signer
        )
        if adapter is not None:  # the job's task has not run yet: its sessions all get their span's part
            service.adapters.bind(job_id, adapter)
    except AdapterError as exc:
        return error(400, f"{exc} (the job stays unstarted)")
    except PromptRejected as exc:
        return error(exc.status, str(exc))
    except ChainError as exc:
        return chain_error(exc)
    except ConfigError as exc:
        return error(400, str(exc))
    return web.json_response(job_view(service, row), status=202)


async def _job_adapter(service: CoordinatorService, job_id: int, cid: str | None) -> AdapterFile | None:
    """The uploaded adapter `cid` (signed by the job's client), checked against the job's model; None: none."""
    if cid is None:
        return None
    adapter = service.adapters.get(cid)
    try:
        job = await asyncio.to_thread(service.registry.get_job, job_id)
    except ChainUnavailable:
        raise
    except ShardnetError as exc:
        raise PromptRejected(f"job {job_id} does not exist on chain ({exc}); submit it first", 404) from exc
    try:
        model = await asyncio.to_thread(service.catalog.get, job.model_id)
    except ShardnetError as exc:
        raise AdapterError(f"the job's model cannot be read to check the adapter ({exc})") from exc
    adapter.check_model(model.manifest.config, model.num_layers)
    return adapter


async def get_job(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    job_id = parse_job_id(request.match_info["job_id"])
    if job_id is None:
        return _bad_job_id(request.match_info["job_id"])
    row = service.state.get_job(job_id)
    if row is None:
        return error(404, f"this coordinator knows no job {job_id}; hand over its prompt first", "not_found")
    reveal = _reader(request, job_id) == (row.client or "").lower()
    view = job_view(service, row, reveal=reveal)
    report = service.jobs.runner.checks.reports.get(job_id)
    view["verification"] = (
        report.to_json(reveal=reveal)
        if report is not None
        else {"status": "unknown", "done": JobState(row.status) in TERMINAL, "note": "no check started here"}
    )
    posted = service.commitments.posted_by(job_id)
    view["commitments"] = [
        {
            "hop": h.hop_index,
            "node": h.node,
            "span": [h.span_start, h.span_end],
            "commitment": h.commitment,
            "signed": h.signed_commitment is not None,
            "settled": h.signed_commitment is not None and not h.settle_note,
            "posted_by_worker": h.node in posted,
            "note": h.settle_note,
        }
        for h in service.state.hops(job_id)
    ]
    return web.json_response(view)


def _reader(request: web.Request, job_id: int) -> str | None:
    """The address that signed this request's X-Shardnet-Auth for `job_id` (lowercase), if valid now."""
    return output_reader(request.headers.get(AUTH_HEADER), job_id)


async def list_jobs(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    rows = service.state.jobs(client=request.query.get("client"))
    return web.json_response({"jobs": [job_view(service, r) for r in rows]})


ROUTES = [
    web.post("/v1/jobs/{job_id}/prompt", post_prompt),
    web.get("/v1/jobs/{job_id}", get_job),
    web.get("/v1/jobs", list_jobs),
]
