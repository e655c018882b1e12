"""A paid fine-tuning job through its coordinator: the client asks for the route and tickets, trains, then hands the
workers' signed commitments back for settlement (coordinator/training_api.py; docs/finetune.md)."""

from __future__ import annotations

from typing import Any

import aiohttp

from shardnet.errors import ShardnetError
from shardnet.finetune.spans import RemoteSpan
from shardnet.job_auth import AUTH_HEADER, sign_training
from shardnet.wire.json_limits import loads_limited


class CoordinatorRefused(ShardnetError):
    """The coordinator refused a fine-tuning request (its message says why and what to do)."""


async def _ask(
    http: aiohttp.ClientSession,
    coordinator: str,
    account: Any,
    job_id: int,
    action: str,
    body: dict[str, Any],
) -> dict[str, Any]:
    url = f"{coordinator.rstrip('/')}/v1/train/jobs/{job_id}/{action}"
    headers = {AUTH_HEADER: sign_training(account, job_id, action, body)}
    async with http.post(url, json=body, headers=headers) as resp:
        raw = await resp.read()
        status = resp.status
    try:
        answer = loads_limited(raw, max_bytes=1 << 20, max_depth=8)
    except Exception as exc:  # noqa: BLE001 - not JSON: say what came back
        raise CoordinatorRefused(f"{url} answered HTTP {status} without JSON: {raw[:200]!r}") from exc
    if status != 200 or not isinstance(answer, dict):
        message = answer.get("error", {}).get("message") if isinstance(answer, dict) else answer
        raise CoordinatorRefused(
            f"the coordinator refused to {action} job {job_id} (HTTP {status}): {message}"
        )
    return answer


async def open_paid_route(
    http: aiohttp.ClientSession, coordinator: str, account: Any, job_id: int
) -> list[RemoteSpan]:
    """Training sessions on the route the job's coordinator chose, under the tickets it signed for the job."""
    answer = await _ask(http, coordinator, account, job_id, "route", {})
    return [await RemoteSpan.open(http, str(h["url"]), dict(h["ticket"])) for h in answer["hops"]]


async def settle_paid_job(
    http: aiohttp.ClientSession,
    coordinator: str,
    account: Any,
    job_id: int,
    closed: list[dict[str, Any]],
    output_hash: bytes,
) -> dict[str, Any]:
    """Hand the workers' signed commitments (their close answers) back; the coordinator settles the job on chain.
    Returns {"tx", "settled", "left_out"}."""
    commitments = [a["job_commitment"] for a in closed if isinstance(a.get("job_commitment"), dict)]
    body = {"output_hash": "0x" + output_hash.hex(), "commitments": commitments}
    return await _ask(http, coordinator, account, job_id, "settle", body)
