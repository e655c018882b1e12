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
    # most positions of a hop this worker checks (POST /v1/verify): what the registry lets a job hold, not the
    # sessions' max_length, so that no honest verifier has to refuse a check (a refusal is a fault); None: max_length
    max_verify_positions: int | None = None

    @property
    def verify_positions(self) -> int:
        return max(self.max_length, self.max_verify_positions or 0)


def verify_positions(model_positions: int, max_job_tokens: int, max_prompt_tokens: int) -> int:
    """The most positions a hop of any job the registry accepts can hold on this model: its largest prompt and
    largest output, within the model's context (what a staked worker must be able to check)."""
    return max(1, min(model_positions, max_job_tokens + max_prompt_tokens))


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
