"""Fine-tuning jobs through the coordinator (issue 16): a client needs no coordinator key of its own.

    POST /v1/train/jobs/{id}/route   {}  -> {"job_id", "max_positions", "backward_factor", "hops": [{"url",
                                     "address", "span", "ticket"}]}: a route over the job's model and one ticket per hop, signed by
                                     this coordinator for the job, bounding each worker's billed positions
                                     (forward + backward_factor x backward) by the job's budget
                                     (maxTokens + maxPromptTokens, what the registry lets one hop bill)
    POST /v1/train/jobs/{id}/settle  {"output_hash": "0x<32 bytes>", "commitments": [signed commitment JSON]}
                                     -> {"tx", "settled": [node], "left_out": [{"node", "reason"}]}: settles the
                                     job on chain with the workers' signed commitments of the close answers, each
                                     checked against what this coordinator ticketed (node, span, job, domain,
                                     positions); a hop without a good commitment is left out (its worker may post)

Both need X-Shardnet-Auth: the job client's signature of exactly this body for this job and action, not expired
(`shardnet.job_auth.sign_training`). The job must name this coordinator and be open on chain. What was ticketed is
kept in memory until the settlement: a restarted coordinator cannot settle a route it ticketed before (the
workers' fallback posts pay them, see worker/chain_sync.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from coordinator.api_models import MAX_JOB_ID, parse_job_id
from coordinator.http_common import SERVICE, chain_error, error, json_body
from coordinator.lifecycle import JobState
from coordinator.router import NoRouteError, RouteHop
from coordinator.service import CoordinatorService
from coordinator.settlement import check_commitment
from shardnet.chain.commitments import SignedCommitment
from shardnet.chain.errors import ChainError
from shardnet.chain.registry import JobStatus, Settlement
from shardnet.chain.registry_types import JobRecord
from shardnet.errors import ShardnetError
from shardnet.job_auth import AUTH_HEADER, training_signer
from shardnet.wire.tickets import sign_ticket

MAX_HOPS = 16  # the registry settles at most 16 hops per job


@dataclass(frozen=True)
class TicketedRoute:
    """What this coordinator ticketed for a fine-tuning job: its hops and each hop's bound on billed positions."""

    hops: list[RouteHop]
    max_positions: int


class TrainingDesk:
    """The fine-tuning jobs this coordinator ticketed and has not settled yet."""

    def __init__(self) -> None:
        self.routes: dict[int, TicketedRoute] = {}
        self.lock = asyncio.Lock()


DESK: web.AppKey[TrainingDesk] = web.AppKey("training_desk", TrainingDesk)


def install(app: web.Application) -> None:
    app[DESK] = TrainingDesk()
    app.add_routes(
        [
            web.post("/v1/train/jobs/{job_id}/route", post_route),
            web.post("/v1/train/jobs/{job_id}/settle", post_settle),
        ]
    )


async def _client_job(
    request: web.Request, action: str, body: dict[str, Any]
) -> tuple[int, JobRecord] | web.Response:
    """The job of the path, if it names this coordinator, is open, and its client signed this request."""
    service: CoordinatorService = request.app[SERVICE]
    job_id = parse_job_id(request.match_info["job_id"])
    if job_id is None:
        return error(400, f"the job id must be a whole number from 1 to {MAX_JOB_ID}", code="invalid_job_id")
    signer = training_signer(request.headers.get(AUTH_HEADER), job_id, action, body)
    try:
        status, _, _ = await asyncio.to_thread(service.registry.job_state, job_id)
        if status == JobStatus.NoJob:
            return error(404, f"no job {job_id} on chain: pay for it first (submitJob)", code="not_found")
        job = await asyncio.to_thread(service.registry.job_record, job_id)
    except ChainError as exc:
        return chain_error(exc)
    if job.coordinator.lower() != service.account.address.lower():
        return error(409, f"job {job_id} names coordinator {job.coordinator}, not this one: ask that one")
    if signer is None or signer != job.client.lower():
        return error(
            401,
            f"only the client of job {job_id} may {action} its fine-tuning: send {AUTH_HEADER} signed with "
            "shardnet.job_auth.sign_training over exactly this body (missing, malformed, expired or another key)",
        )
    if status != JobStatus.Open:
        return error(409, f"job {job_id} is {status.name.lower()} on chain: pay for a new job")
    return job_id, job


async def post_route(request: web.Request) -> web.Response:
    service: CoordinatorService = request.app[SERVICE]
    desk = request.app[DESK]
    body = await json_body(request)
    found = await _client_job(request, "route", body)
    if isinstance(found, web.Response):
        return found
    job_id, job = found
    async with desk.lock:
        if job_id in desk.routes:
            return error(409, f"job {job_id} was already routed: train under its tickets, or pay a new job")
        row = service.state.get_job(job_id)
        if (
            row is not None and row.status != JobState.SUBMITTED.value
        ):  # its prompt was handed over: inference
            return error(
                409, f"job {job_id} is an inference job here ({row.status}): pay a new job to fine-tune"
            )
        try:
            hops = service.router.route(job.model_id, job.num_layers)
        except NoRouteError as exc:
            return error(
                503, f"no route over the job's model now ({exc}); try again later", "service_unavailable"
            )
        if len(hops) > MAX_HOPS:
            return error(503, f"the route has {len(hops)} hops, more than the registry settles ({MAX_HOPS})")
        try:
            max_prompt = int(await asyncio.to_thread(service.registry.max_prompt_tokens))
            domain = await asyncio.to_thread(service.registry.domain)
            model = await asyncio.to_thread(service.catalog.get, job.model_id)
        except ChainError as exc:
            return chain_error(exc)
        except ShardnetError as exc:  # the manifest cannot be fetched now
            return error(503, f"the job's model is not available here now ({exc}); try again later")
        max_positions = job.max_tokens + max_prompt
        expires_at = max(int(time.time()) + 60, int(job.deadline))  # the fallback post needs it until then
        answer = []
        for hop in hops:
            ticket = sign_ticket(
                service.account, worker=hop.address, session_id=uuid.uuid4().hex, job_id=job_id,
                max_positions=max_positions, span=hop.span, expires_at=expires_at,
                chain_id=domain.chain_id, registry=domain.registry,
            )  # fmt: skip
            answer.append(
                {
                    "url": hop.endpoint,
                    "address": hop.address,
                    "span": [hop.span.start, hop.span.end],
                    "ticket": ticket,
                }
            )
        desk.routes[job_id] = TicketedRoute(list(hops), max_positions)
    factor = model.manifest.backward_factor  # what each worker bills a backward position as
    return web.json_response(
        {"job_id": job_id, "max_positions": max_positions, "backward_factor": factor, "hops": answer}
    )


async def post_settle(request: web.Request) -> web.Response:
    service: CoordinatorService = request.app[SERVICE]
    desk = request.app[DESK]
    body = await json_body(request)
    found = await _client_job(request, "settle", body)
    if isinstance(found, web.Response):
        return found
    job_id, job = found
    output_hash, commitments = body.get("output_hash"), body.get("commitments")
    if (
        not isinstance(output_hash, str)
        or len(output_hash) != 66
        or not output_hash.startswith("0x")
        or not isinstance(commitments, list)
        or len(commitments) > MAX_HOPS
    ):
        return error(
            400,
            'send {"output_hash": "0x<keccak of the adapter>", "commitments": [close answers\' job_commitment]}',
        )
    try:
        output = bytes.fromhex(output_hash[2:])
        signed = [SignedCommitment.from_json(c) for c in commitments]
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        return error(
            400, f"malformed output_hash or commitment ({exc}): hand back the workers' job_commitment"
        )
    async with desk.lock:
        route = desk.routes.get(job_id)
        if route is None:
            return error(
                404, f"this coordinator ticketed no route of job {job_id}: ask for one first (/route)"
            )
        try:
            domain = await asyncio.to_thread(service.registry.domain)
        except ChainError as exc:
            return chain_error(exc)
        settled: list[SignedCommitment] = []
        left_out = []
        for hop in route.hops:
            mine = [c for c in signed if c.node.lower() == hop.address.lower()]
            reason = "no commitment of this hop's worker was handed back" if not mine else None
            if mine:
                reason = check_commitment(
                    mine[0], job_id=job_id, node=hop.address, span=hop.span, domain=domain,
                    max_positions=route.max_positions, seen_positions=route.max_positions,
                )  # fmt: skip
            if reason is None:
                settled.append(mine[0])
            else:
                left_out.append({"node": hop.address, "reason": reason})
        if not settled:
            return error(422, f"no good commitment for job {job_id}: {left_out}")
        try:
            tx = await asyncio.to_thread(
                service.registry.settle_jobs, [Settlement(job_id, job, output, settled)]
            )
        except ChainError as exc:
            return chain_error(exc)
        del desk.routes[job_id]
    return web.json_response({"tx": tx.tx_hash, "settled": [c.node for c in settled], "left_out": left_out})
