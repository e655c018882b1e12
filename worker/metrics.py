"""Prometheus metrics of one worker, in a registry of its own (so several workers can share a process in tests)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sessions_open = Gauge(
            "shardnet_worker_sessions_open", "Inference sessions currently open", registry=self.registry
        )
        self.sessions_closed = Counter(
            "shardnet_worker_sessions_closed",
            "Sessions closed, by reason (closed, evicted, expired, drained)",
            ["reason"],
            registry=self.registry,
        )
        self.tokens_processed = Counter(
            "shardnet_worker_tokens_processed",
            "Token positions computed through this worker's layers",
            registry=self.registry,
        )
        self.step_seconds = Histogram(
            "shardnet_worker_step_seconds",
            "Wall time of the model compute of one step",
            buckets=STEP_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "shardnet_worker_batch_size",
            "Sessions' decode steps per batched forward (worker.batching; lone steps are not counted)",
            buckets=(2, 4, 8, 16, 32, 64, 128, 256, 1024),
            registry=self.registry,
        )
        self.compute_seconds = Counter(
            "shardnet_worker_compute_seconds",
            "Seconds of the compute thread by part: forward (the model), finish (encode, step hash, fingerprint, "
            "database record of each step)",
            ["part"],
            registry=self.registry,
        )
        self.request_errors = Counter(
            "shardnet_worker_request_errors",
            "Requests answered with an error, by status",
            ["status"],
            registry=self.registry,
        )

    def render(self) -> tuple[bytes, str]:
        """The exposition body and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
