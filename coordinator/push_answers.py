"""Direct answers in push mode: `POST /v1/push/answers`, where the last worker of a chain sends a step's answer.

The coordinator sends a push step to the first worker with a fresh random `X-Answer-Id` and waits for whichever
comes first: the last worker's POST here under that id (the answer; a token's data crossed each link once), or
the first worker's response (an error naming the failed hop, or the answer itself when the last worker could not
reach this endpoint). The id travels through every worker of the chain, so an answer must also carry the key that
only the last worker was given (in the `answer_to` URL of its open, `?key=`): a worker in the middle cannot answer
in the last one's place. An id is waited for only while its step runs; anything else is refused (404, 403), and
nothing is read beyond `MAX_ANSWER_BYTES`.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
from urllib.parse import urlsplit

from aiohttp import web

from shardnet import trace
from shardnet.peer.client import StepResult, step_answer
from shardnet.peer.errors import WorkerAPIError

PATH = "/v1/push/answers"
ANSWER_ID_HEADER = "X-Answer-Id"
MAX_ANSWER_BYTES = 16 * 1024 * 1024  # a step's logits frame (vocab x 4 bytes a position), with room


def answers_base(public_url: str | None, endpoint: str, chain_endpoint: str | None) -> str:
    """The URL workers reach this coordinator at, for direct answers: `--public-url`; else, when it listens on a
    loopback or wildcard address (which names the worker itself on the worker's host), the endpoint the
    registry lists for it if that one is not loopback too; else where it listens."""
    if public_url:
        return public_url.rstrip("/")
    if chain_endpoint and _local(endpoint) and not _local(chain_endpoint):
        return chain_endpoint.rstrip("/")
    return endpoint.rstrip("/")


def _local(url: str) -> bool:
    """Whether `url` names no host a remote worker can reach: loopback (127/8, ::1, localhost) or wildcard."""
    host = (urlsplit(url).hostname or "").lower()
    if host in ("", "localhost", "0.0.0.0", "::"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.endswith(".localhost")


class PushAnswers:
    """The steps waiting for a direct answer, by answer id; `url` is where workers send them (set at start)."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url
        self._waiting: dict[str, tuple[asyncio.Future[StepResult], str]] = {}
        self.received = 0  # direct answers taken (for tests and the benchmark)

    def answer_to(self, key: str) -> str | None:
        """The URL given to a chain's last worker (None when not listening): answers carry `key` back."""
        return f"{self.url}?key={key}" if self.url else None

    def expect(self, answer_id: str, key: str) -> asyncio.Future[StepResult]:
        """A step waits for its answer under `answer_id`, from the worker given `key`."""
        future: asyncio.Future[StepResult] = asyncio.get_running_loop().create_future()
        self._waiting[answer_id] = (future, key)
        return future

    def forget(self, answer_id: str) -> None:
        self._waiting.pop(answer_id, None)

    def routes(self) -> list[web.RouteDef]:
        return [web.post(PATH, self.handle)]

    async def handle(self, request: web.Request) -> web.Response:
        trace.mark("answered")
        waiting = self._waiting.get(request.headers.get(ANSWER_ID_HEADER, ""))
        if waiting is None or waiting[0].done():
            return web.json_response(
                {"error": "no step waits for this answer id (it finished, failed over or never existed)"},
                status=404,
            )
        future, key = waiting
        if not hmac.compare_digest(request.query.get("key", ""), key):
            return web.json_response(
                {"error": "this answer does not carry the key its chain's last worker was given"}, status=403
            )
        body = await request.content.read(MAX_ANSWER_BYTES + 1)
        if len(body) > MAX_ANSWER_BYTES:
            return web.json_response({"error": f"an answer is at most {MAX_ANSWER_BYTES} bytes"}, status=413)
        try:
            result = step_answer(request.headers, body, request.remote or "a worker")
        except WorkerAPIError as exc:
            return web.json_response({"error": exc.message}, status=400)
        if not future.done():
            future.set_result(result)
            self.received += 1
        return web.json_response({"ok": True})
