"""What a worker server is told about its block and the limits it enforces (from `worker.config`)."""

from __future__ import annotations

from dataclasses import dataclass

from shardnet.span import LayerSpan


@dataclass(frozen=True)
class ServerLimits:
    max_sessions: int = 16
    max_per_coordinator: int = 16
    max_length: int = 2048
    max_memory_bytes: int = 1 << 30
    idle_timeout_s: float = 300.0
    unused_reservation_s: float = 30.0  # a session's reservation with no step by then is closed
    max_body_bytes: int = 64 << 20
    forward_timeout_s: float = 60.0
    body_timeout_s: float = 30.0  # a request body not fully sent by then gets 408 and frees the connection
    batch_window_s: float = 0.002  # a decode step waits this long for others to batch with (worker.batching)
    max_batch: int = 16  # most decode steps in one batched forward; 1 turns batching off


@dataclass(frozen=True)
class BlockInfo:
    """What the server must know about the block it serves (from `shardnet.model.Block` and the manifest)."""

    span: LayerSpan
    num_layers: int
    is_first: bool
    is_last: bool
    hidden_size: int
    vocab_size: int | None
    kv_bytes_per_token: int
