"""What a worker's sessions cost in memory, what it keeps of their outputs, and giving freed memory back.

A session costs its KV cache (`kv_bytes_per_token` a position of the worker's span) plus the outputs it keeps
for `GET /v1/sessions/{id}/outputs`:

- a middle hop keeps every hidden state it sent, as sent (push mode: when the next worker fails, the
  coordinator reads them to replay into a replacement of that worker);
- the last hop keeps only the top `TOP_K` logits of each position and their token ids. Nothing replays logits
  (there is no next hop), the coordinator samples from the logits each step answered, and the step hash (the
  commitment) is taken over the full logits frame before it leaves; the top-k serve a coordinator that lost a
  step's answer and wants its greedy token back. Full fp32 logits cost vocab x 4 bytes a position (196,636 on
  SmolLM2): the top 16 and their ids cost 156 (220 with Python's bookkeeping).

`bytes_per_position` (KV cache plus the most a position's kept output takes, one-token steps in fp32, frame
header and Python object included) is what `/health` reports, and what a session opened with `max_positions`
reserves up front, so a coordinator can admit a job by its worst case before paying for it. On a GPU worker
the KV caches are in device memory and the budget is of that device (`worker.placement`, docs/gpu.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
from typing import Any

import torch

from shardnet.wire.frames import decode_frame, encode_frame
from worker.limits import BlockInfo, ServerLimits
from worker.sessions import CloseHook, SessionManager

log = logging.getLogger(__name__)

TOP_K = 16
#: bytes of Python bookkeeping around one kept output (the bytes object's header, its slot in a list)
OBJECT_OVERHEAD = 64
LOGITS_CODEC = "fp32"  # the last block's logits always travel in full precision


def kept_output(out: torch.Tensor, frame: bytes, *, is_last: bool) -> bytes:
    """What a session keeps of one step's output: the frame sent (a middle hop), else the top-k frame."""
    return top_k_frame(out) if is_last else frame


def top_k_frame(logits: torch.Tensor) -> bytes:
    """One fp32 frame [1, n, 2k]: the k largest logits of each position (descending), then their token ids
    (integers, exact in fp32 below 2^24)."""
    k = min(TOP_K, int(logits.shape[-1]))
    values, ids = logits.float().topk(k, dim=-1)
    return encode_frame(torch.cat([values, ids.float()], dim=-1), "fp32")


def top_k_of(info: BlockInfo) -> int:
    """How many logits a position of the last hop keeps."""
    return min(TOP_K, info.vocab_size or TOP_K)


def _kept_width(info: BlockInfo) -> int:
    return 2 * top_k_of(info) if info.is_last else info.hidden_size


def kept_bytes_per_position(info: BlockInfo) -> int:
    """The most bytes one position's kept output takes (a one-token step, fp32: the worst case of any codec)."""
    return len(encode_frame(torch.zeros(1, 1, _kept_width(info)), "fp32")) + OBJECT_OVERHEAD


def outputs_answer(kept: list[bytes], info: BlockInfo, codec: str) -> tuple[bytes, dict[str, str]]:
    """`GET /outputs`: every kept output of a session (`codec`: the session's) as one frame along the positions,
    and the answer's headers (`X-Steps`; `X-Top-K` on the last hop: its frame is [1, n, 2k], values then ids)."""
    headers = {"X-Steps": str(len(kept))}
    if info.is_last:
        codec = LOGITS_CODEC
        headers["X-Top-K"] = str(top_k_of(info))
    if kept:
        return encode_frame(torch.cat([decode_frame(f) for f in kept], dim=1), codec), headers
    return encode_frame(torch.zeros(1, 0, _kept_width(info)), codec), headers


def memory_health(sessions: Any) -> dict[str, int]:
    """The machine-readable memory part of `/health` (a `SessionManager`'s numbers, in bytes)."""
    return {
        "budget_bytes": sessions.max_memory_bytes,
        "used_bytes": sessions.total_memory_bytes(),
        "free_bytes": sessions.free_memory_bytes(),
        "bytes_per_position": sessions.bytes_per_position,
        "kv_bytes_per_position": sessions.kv_bytes_per_token,
        "kept_output_bytes_per_position": sessions.output_bytes_per_position,
    }


class MemoryTrimmer:
    """Hands freed heap back to the system after sessions close (glibc keeps freed arenas otherwise), at most
    once per `min_interval_s` unless no session is left."""

    def __init__(self, min_interval_s: float = 1.0) -> None:
        self.min_interval_s = min_interval_s
        self._last = 0.0
        self._trim = _malloc_trim()

    def after_close(self, sessions_left: int) -> None:
        now = time.monotonic()
        if self._trim is None or (sessions_left and now - self._last < self.min_interval_s):
            return
        self._last = now
        try:
            self._trim(0)
        except OSError as exc:  # never worth failing a close for
            log.debug("malloc_trim failed: %s", exc)


def _malloc_trim() -> Any:
    """glibc's malloc_trim, or None where there is none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


def session_manager(limits: ServerLimits, info: BlockInfo, *, on_close: CloseHook) -> SessionManager:
    """The session manager of a worker serving `info`'s block within `limits` (sessions, length, cache memory)."""
    return SessionManager(
        max_sessions=limits.max_sessions,
        max_per_coordinator=limits.max_per_coordinator,
        max_length=limits.max_length,
        max_memory_bytes=limits.max_memory_bytes,
        kv_bytes_per_token=info.kv_bytes_per_token,
        output_bytes_per_position=kept_bytes_per_position(info),
        idle_timeout_s=limits.idle_timeout_s,
        unused_reservation_s=limits.unused_reservation_s,
        on_close=on_close,
    )
