"""The worker client's typed errors for statuses and dead workers (keys: tests/test_keys.py)."""

from __future__ import annotations

import pytest
import torch

from shardnet.chain.devnet import free_port
from shardnet.peer.client import WorkerClient
from shardnet.peer.errors import (
    InvalidTensor,
    NextHopFailed,
    SessionConflict,
    WorkerAPIError,
    WorkerUnavailable,
    WorkerUnreachable,
    error_for_status,
)
from tests.worker.harness import run


def test_error_classes_follow_the_status() -> None:
    assert isinstance(error_for_status(409, "m"), SessionConflict)
    assert isinstance(error_for_status(422, "m"), InvalidTensor)
    assert isinstance(error_for_status(503, "m"), WorkerUnavailable)
    assert isinstance(error_for_status(502, "m", "http://next"), NextHopFailed)
    other = error_for_status(418, "teapot")
    assert type(other) is WorkerAPIError and other.status == 418 and "418" in str(other)


def test_client_reports_a_dead_worker_as_unreachable() -> None:
    client = WorkerClient(f"http://127.0.0.1:{free_port()}", timeout_s=5)

    async def go() -> None:
        try:
            await client.step("s", torch.zeros(1, 1, 4), 0)
        finally:
            await client.aclose()

    with pytest.raises(WorkerUnreachable) as err:
        run(go())
    assert err.value.status == 0 and "route around it" in str(err.value)
