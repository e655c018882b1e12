"""Push mode on the worker: how a step is answered, replays that must not be forwarded, and re-linking a session.

- A step is answered with the frame the worker computed, or, on the last worker of a session opened with
  `"answer": "top_k"`, with the top-k frame it keeps anyway (`worker.memory.top_k_frame`: the k largest logits
  of each position and their ids, ~150 bytes instead of vocab x 4). The step hash (`X-Step-Hash`) is always
  over the full frame, and `X-Fingerprint` carries the fingerprint bound in the step's leaf, so the coordinator
  can build the after-the-fact check's package without the full logits.
- `X-Forward: 0` on a step: answer it here even when the session forwards (the coordinator replays a dead
  worker's inputs into a replacement; only the failed step goes on to the next worker).
- Direct answers: the last worker's session opened with `"answer_to": URL` (the coordinator's answer endpoint)
  POSTs a step that came with `X-Answer-Id` straight to that URL (body: the answer; headers: the step's hashes,
  `X-Hop-Hashes` with every hop's, accumulated on the way in `X-Upstream-Hashes`) and acknowledges the worker
  before it with an empty body (`X-Answered: direct`). A token's data then crosses each link once: n + 1
  traversals for n workers; the acknowledgements travel back off the token's critical path. When the POST fails
  the answer goes back the usual way, in the response.
- `POST /v1/sessions/{id}/next` `{"next": {"url", "session_id", "token"} | null}`: forward later steps to
  another session (the replacement of a dead next worker). It needs the session's token, as a step does.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from shardnet import trace
from shardnet.peer.errors import BadRequest, SessionConflict
from shardnet.wire.json_limits import BodyRejected, loads_limited
from worker.forwarding import ANSWER_ID_HEADER, UPSTREAM_HASHES_HEADER, forward_step, upstream_hashes
from worker.inputs import MAX_OPEN_JSON_BYTES, MAX_OPEN_JSON_DEPTH, parse_next
from worker.sessions import Session

if TYPE_CHECKING:
    from worker.server import WorkerServer

log = logging.getLogger(__name__)

FORWARD_HEADER = "X-Forward"


def forwards(session: Session, request: web.Request) -> bool:
    """Whether this step's output goes on to the next worker (push mode, unless `X-Forward: 0`)."""
    return session.next_hop is not None and request.headers.get(FORWARD_HEADER, "1") != "0"


async def step_answer(
    server: WorkerServer, session: Session, request: web.Request, frame: bytes, digest: bytes, index: int
) -> web.Response:
    """The answer of a step this worker does not forward: its frame, or the top-k frame of a compact session;
    sent straight to the coordinator when the session has `answer_to` and the step an `X-Answer-Id`."""
    headers = {"X-Step-Hash": "0x" + digest.hex(), "X-Step-Index": str(index)}
    body = frame
    if session.compact:
        body = session.output_frames[-1]  # the top-k frame kept of this step (worker.memory.kept_output)
        headers["X-Top-K"] = str(server.top_k)
        headers["X-Fingerprint"] = "0x" + session.committed[-1][1].hex()
    answer_id = request.headers.get(ANSWER_ID_HEADER)
    if session.answer_to and answer_id and server.http is not None:
        hashes = [*upstream_hashes(request.headers.get(UPSTREAM_HASHES_HEADER)), "0x" + digest.hex()]
        direct = {**headers, ANSWER_ID_HEADER: answer_id, "X-Hop-Hashes": json.dumps(hashes)}
        trace.mark("answer")
        try:
            async with server.http.post(session.answer_to, data=body, headers=direct) as resp:
                if resp.status == 200:
                    return web.Response(body=b"", headers={**headers, "X-Answered": "direct"})
                refusal = (await resp.content.read(300)).decode(errors="replace")
                log.warning(
                    "the coordinator at %s refused a direct answer (%d: %s): answering back the chain",
                    session.answer_to.split("?")[0],
                    resp.status,
                    refusal,
                )
        except (TimeoutError, aiohttp.ClientError) as exc:
            log.warning("cannot answer the coordinator directly (%s): answering back the chain", exc)
    return web.Response(body=body, headers=headers, content_type="application/octet-stream")


async def forward(
    server: WorkerServer, session: Session, request: web.Request, frame: bytes, digest: bytes, start_pos: int
) -> web.Response:
    """Send this step's output on to the next worker; its answer (or acknowledgement) is this step's answer.
    Runs outside the session's lock (a re-link to nobody since the step was computed: answered here)."""
    hop = session.next_hop
    if hop is None or server.http is None:
        headers = {"X-Step-Hash": "0x" + digest.hex()}
        return web.Response(body=frame, headers=headers, content_type="application/octet-stream")
    body, headers = await forward_step(
        server.http,
        hop,
        frame,
        digest,
        start_pos,
        session_id=session.session_id,
        answer_id=request.headers.get(ANSWER_ID_HEADER),
        upstream=upstream_hashes(request.headers.get(UPSTREAM_HASHES_HEADER)),
    )
    return web.Response(body=body, headers=headers, content_type="application/octet-stream")


async def set_next_hop(server: WorkerServer, request: web.Request) -> web.Response:
    """`POST /v1/sessions/{id}/next`: where the session forwards its next steps (null: nowhere, it answers)."""
    session = server.sessions.get(
        request.match_info["session_id"], token=request.headers.get("X-Session-Token", "")
    )
    raw = await request.content.read(MAX_OPEN_JSON_BYTES + 1)
    try:
        data = loads_limited(raw, max_bytes=MAX_OPEN_JSON_BYTES, max_depth=MAX_OPEN_JSON_DEPTH)
    except BodyRejected as exc:
        raise BadRequest(f'{exc}; send {{"next": {{"url", "session_id", "token"}} or null}}') from exc
    if not isinstance(data, dict) or set(data) != {"next"}:
        raise BadRequest(
            'send {"next": {"url": "http://…", "session_id": "…", "token": "…"}} or {"next": null}'
        )
    next_hop = parse_next(data["next"], server.info.is_last)
    async with session.lock:  # not while a step is computed; a step being forwarded keeps the hop it had
        if session.closed:
            raise SessionConflict(f"session {session.session_id!r} is closed: nothing to re-link")
        session.next_hop = next_hop
    return web.json_response({"session_id": session.session_id, "next": next_hop.url if next_hop else None})
