"""LoRA adapters in inference: a session's own adapter tensors, applied to its steps only.

The session's coordinator sends, right after the open and before the first step,
`POST /v1/sessions/{id}/adapter` (the session token in its header) with a safetensors body holding the
LoRA halves of this worker's layers only (`lora.{layer}.{proj}.A` / `.B`, float). The worker checks them
against its block (`shardnet.model.training.check_adapters`: layers of its span, shapes of its projections,
paired halves of one rank <= 256, finite values; deep prompts are refused here: they need prompt positions
prefilled first) and from then on runs that session's steps inside `active_adapters`, whose hooks read a
thread-local set only around that session's step: other sessions of the block stay plain.

Answer: `{"adapter": "0x<keccak of the body>", "tensors": n}`: the coordinator checks the hash against the
part it sent (the part is the job's adapter file cut to this span; the job binds the file's CID).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from aiohttp import web
from eth_utils import keccak
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors

from shardnet.model.adapters import ModelError
from shardnet.model.training import active_adapters, check_adapters, prepare_block
from shardnet.peer.errors import BadRequest, InvalidTensor, SessionConflict
from worker.forwarding import SESSION_TOKEN_HEADER
from worker.http_errors import read_body
from worker.sessions import ModelSession

if TYPE_CHECKING:
    from worker.server import WorkerServer

#: the most adapter bytes one session may hold (rank 256 on 4 projections of a few dozen large layers fits)
MAX_ADAPTER_BYTES = 256 * 1024 * 1024


class AdaptedCompute:
    """A block session whose steps run with `adapters` active (on the compute thread, for that step only)."""

    def __init__(self, inner: ModelSession, adapters: Mapping[str, torch.Tensor], digest: bytes) -> None:
        self.inner = inner
        self.adapters = dict(adapters)
        self.digest = digest

    @property
    def length(self) -> int:
        return self.inner.length

    def step(self, x: Any, start_pos: int) -> Any:
        with active_adapters(self.adapters):
            return self.inner.step(x, start_pos)

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


def decode_adapter(body: bytes) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors body (400 if it is not one, 422 for a deep prompt or non-float tensor)."""
    try:
        tensors = load_safetensors(body)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise BadRequest(
            f"the adapter body is not a safetensors file ({exc}): send the span's LoRA tensors"
        ) from exc
    if not tensors:
        raise InvalidTensor(
            "the adapter holds no tensors: send lora.<layer>.<proj>.A/B of this worker's layers"
        )
    for name, tensor in tensors.items():
        if name.startswith("prompt."):
            raise InvalidTensor(f"{name}: deep prompts are not served in inference (only LoRA adapters)")
        if tensor.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise InvalidTensor(f"adapter tensor {name!r} must be float32/16 or bfloat16, got {tensor.dtype}")
    return {k: v.float() for k, v in tensors.items()}


class AdapterEndpoint:
    """`POST /v1/sessions/{id}/adapter` of one `WorkerServer` (mounted as extra routes, then bound)."""

    def __init__(self) -> None:
        self._server: WorkerServer | None = None

    def bind(self, server: WorkerServer) -> AdapterEndpoint:
        self._server = server
        return self

    def routes(self) -> list[web.RouteDef]:
        return [web.post("/v1/sessions/{session_id}/adapter", self.load)]

    async def load(self, request: web.Request) -> web.Response:
        server = self._server
        if server is None:
            raise RuntimeError("AdapterEndpoint.bind(server) was not called before serving")
        session = server.sessions.get(
            request.match_info["session_id"], token=request.headers.get(SESSION_TOKEN_HEADER, "")
        )
        body = await read_body(
            request, min(MAX_ADAPTER_BYTES, server.limits.max_body_bytes), server.limits.body_timeout_s
        )
        adapters = decode_adapter(body)
        loop = asyncio.get_running_loop()
        try:  # on the compute thread: hooks are installed there, never beside a running step
            await loop.run_in_executor(server._compute, _check_and_prepare, server.block, adapters)
        except ModelError as exc:
            raise InvalidTensor(f"adapter refused: {exc}") from exc
        async with session.lock:
            if session.closed:
                raise SessionConflict(f"session {session.session_id!r} was closed before its adapter came")
            if session.steps or isinstance(session.compute, AdaptedCompute):
                raise SessionConflict(
                    "an adapter is loaded once, before the session's first step: open a new session"
                )
            digest = keccak(body)
            device = getattr(server.block, "device", None)  # moved once, not at every step of the session
            on_device = adapters if device is None else {k: v.to(device) for k, v in adapters.items()}
            session.compute = AdaptedCompute(session.compute, on_device, digest)
        return web.json_response({"adapter": "0x" + digest.hex(), "tensors": len(adapters)})


def _check_and_prepare(block: Any, adapters: Mapping[str, torch.Tensor]) -> None:
    check_adapters(block, adapters)
    prepare_block(block)
