"""Where a fine-tuning client's layer spans run: on a worker over HTTP (`RemoteSpan`) or in this process
(`LocalSpan`, for single-process training and tests). Both take a step's forward and, later, its backward."""

from __future__ import annotations

from typing import Any, Protocol

import aiohttp
import torch

from shardnet.model.block import Block
from shardnet.model.training import span_backward, span_forward
from shardnet.peer.errors import WorkerUnreachable, error_for_status
from shardnet.span import LayerSpan
from shardnet.wire.commitment import step_hash
from shardnet.wire.json_limits import loads_limited
from shardnet.wire.tensor_dict import decode_tensors, encode_tensors

SESSION_TOKEN_HEADER = "X-Session-Token"
Grads = tuple[torch.Tensor, dict[str, torch.Tensor]]


class SpanRunner(Protocol):
    span: LayerSpan

    async def forward(
        self, step_id: int, hidden: torch.Tensor, adapters: dict[str, torch.Tensor]
    ) -> torch.Tensor: ...

    async def backward(self, step_id: int, grad: torch.Tensor) -> Grads: ...

    async def close(self) -> dict[str, Any]: ...


class LocalSpan:
    """A block in this process, with the same keep-then-backward protocol as a worker."""

    def __init__(self, block: Block) -> None:
        self.block = block
        self.span = block.span
        self._kept: dict[int, tuple[torch.Tensor, dict[str, torch.Tensor]]] = {}

    async def forward(
        self, step_id: int, hidden: torch.Tensor, adapters: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        if step_id >= 0:  # a negative id: an evaluation forward, no backward follows
            self._kept[step_id] = (hidden, adapters)
        with torch.no_grad():
            return span_forward(self.block, hidden, adapters)

    async def backward(self, step_id: int, grad: torch.Tensor) -> Grads:
        hidden, adapters = self._kept.pop(step_id)
        return span_backward(self.block, hidden, adapters, grad)

    async def close(self) -> dict[str, Any]:
        self._kept.clear()
        return {}


class RemoteSpan:
    """A training session on one worker (`worker/training.py`), opened with a coordinator's ticket."""

    def __init__(
        self, http: aiohttp.ClientSession, url: str, span: LayerSpan, session_id: str, token: str
    ) -> None:
        self._http = http
        self.url = url.rstrip("/")
        self.span = span
        self.session_id = session_id
        self._token = token
        self.step_hashes: list[bytes] = []  # keccak of every answer received: the leaves of its commitment

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, url: str, ticket: dict[str, Any]) -> RemoteSpan:
        answer = await _call(http, "POST", f"{url.rstrip('/')}/v1/train/sessions", json={"ticket": ticket})
        data = loads_limited(answer, max_bytes=65536, max_depth=4)
        return cls(http, url, LayerSpan(*data["span"]), str(data["session_id"]), str(data["session_token"]))

    async def forward(
        self, step_id: int, hidden: torch.Tensor, adapters: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        body = await self._post("forward", step_id, {"hidden": hidden, **adapters})
        return decode_tensors(body)["hidden"]

    async def backward(self, step_id: int, grad: torch.Tensor) -> Grads:
        out = decode_tensors(await self._post("backward", step_id, {"grad": grad}))
        grads = {k.removeprefix("grad."): v for k, v in out.items() if k.startswith("grad.")}
        return out["grad_hidden"], grads

    async def close(self) -> dict[str, Any]:
        answer = await _call(
            self._http, "DELETE", self._path(""), headers={SESSION_TOKEN_HEADER: self._token}
        )
        result: dict[str, Any] = loads_limited(answer, max_bytes=65536, max_depth=6)
        return result

    def _path(self, what: str) -> str:
        return f"{self.url}/v1/train/{self.session_id}" + (f"/{what}" if what else "")

    async def _post(self, what: str, step_id: int, tensors: dict[str, torch.Tensor]) -> bytes:
        step = str(step_id) if step_id >= 0 else "eval"  # a negative id: an evaluation forward
        headers = {SESSION_TOKEN_HEADER: self._token, "X-Step-Id": step}
        body = await _call(
            self._http, "POST", self._path(what), data=encode_tensors(tensors), headers=headers
        )
        self.step_hashes.append(step_hash(body))  # what the worker's commitment must cover, in order
        return body


async def _call(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> bytes:
    """The body of a 2xx answer; else the worker's error as a `WorkerAPIError` of its status."""
    try:
        async with http.request(method, url, **kwargs) as resp:
            body = await resp.read()
            if resp.status >= 400:
                try:
                    message = str(loads_limited(body, max_bytes=65536, max_depth=4).get("error", ""))
                except Exception:
                    message = body[:300].decode(errors="replace")
                raise error_for_status(resp.status, message, url)
            return body
    except aiohttp.ClientError as exc:
        raise WorkerUnreachable(f"cannot reach {url}: {exc}", url=url) from exc
