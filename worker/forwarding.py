"""Push mode: a worker sends its step output to the next worker itself and hands back that worker's answer,
with every hop's step hash. What the next worker answers is read with bounds (it may be hostile)."""

from __future__ import annotations

import json

import aiohttp

from shardnet import trace
from shardnet.peer.errors import NextHopFailed, WorkerAPIError
from shardnet.wire.json_limits import loads_limited
from worker.sessions import NextHop

SESSION_TOKEN_HEADER = "X-Session-Token"
ANSWER_ID_HEADER = "X-Answer-Id"  # direct answers (worker.push_links): the coordinator's id of the step
UPSTREAM_HASHES_HEADER = "X-Upstream-Hashes"  # the step hashes of the workers before, on the way in
#: JSON a worker reads from the next worker (an error, a list of hop hashes): small and flat
MAX_PEER_JSON_BYTES, MAX_PEER_JSON_DEPTH = 64 * 1024, 4


async def forward_step(
    http: aiohttp.ClientSession,
    hop: NextHop,
    frame: bytes,
    digest: bytes,
    start_pos: int,
    *,
    session_id: str,
    answer_id: str | None = None,
    upstream: list[str] | None = None,
) -> tuple[bytes, dict[str, str]]:
    """POST `frame` to the next worker's session; returns its answer's body and the headers to pass back
    (`X-Hop-Hashes` starts with this hop's `digest`). Raises `NextHopFailed` naming the failed worker."""
    url = f"{hop.url}/v1/sessions/{hop.session_id}/step"
    try:
        headers = {"X-Start-Pos": str(start_pos), SESSION_TOKEN_HEADER: hop.token}
        if answer_id:  # a direct answer: the last worker needs the id and every hash before its own
            headers[ANSWER_ID_HEADER] = answer_id
            headers[UPSTREAM_HASHES_HEADER] = json.dumps([*(upstream or []), "0x" + digest.hex()])
        trace.mark("send")
        async with http.post(url, data=frame, headers=headers) as resp:
            body = await resp.read()
            if resp.status != 200:
                raise _downstream_error(hop.url, resp.status, body)
            downstream = _hop_hashes(resp.headers.get("X-Hop-Hashes"), resp.headers["X-Step-Hash"])
            passed = {
                h: resp.headers[h] for h in ("X-Top-K", "X-Fingerprint", "X-Answered") if h in resp.headers
            }
            return body, {
                "X-Step-Hash": resp.headers["X-Step-Hash"],
                "X-Step-Index": resp.headers.get("X-Step-Index", ""),
                "X-Hop-Hashes": json.dumps(["0x" + digest.hex(), *downstream]),
                **passed,  # the last worker's compact answer: its k, and the fingerprint bound in its leaf
            }
    except (TimeoutError, aiohttp.ClientError, KeyError, ValueError) as exc:
        raise NextHopFailed(
            f"next worker {hop.url} failed ({type(exc).__name__}: {exc}); this hop's output is kept: "
            f"fetch it from GET /v1/sessions/{session_id}/outputs to replay on a replacement",
            url=hop.url,
        ) from exc


def upstream_hashes(header: str | None) -> list[str]:
    """A step's `X-Upstream-Hashes` (the hashes of the workers before), checked; [] when absent or malformed."""
    try:
        return _hop_hashes(header, "")[:1024] if header else []
    except ValueError:
        return []


def _hop_hashes(header: str | None, step_hash: str) -> list[str]:
    """The next worker's `X-Hop-Hashes` (a JSON list of 0x-hex strings), checked, else its own step hash."""
    if header is None:
        return [step_hash]
    hashes = loads_limited(header, max_bytes=MAX_PEER_JSON_BYTES, max_depth=MAX_PEER_JSON_DEPTH)
    if not isinstance(hashes, list) or not all(isinstance(h, str) for h in hashes):
        raise ValueError("X-Hop-Hashes is not a JSON list of hex strings")
    return hashes


def _downstream_error(url: str, status: int, body: bytes) -> WorkerAPIError:
    try:
        data = loads_limited(body, max_bytes=MAX_PEER_JSON_BYTES, max_depth=MAX_PEER_JSON_DEPTH)
        message, failed = str(data.get("error", "")), str(data.get("failed_hop") or url)
    except (ValueError, AttributeError):
        message, failed = body[:200].decode(errors="replace"), url
    if status == 502:  # a hop further down failed: pass its name on unchanged
        return NextHopFailed(message, url=failed)
    return NextHopFailed(f"next worker {url} answered {status}: {message}", url=url)
