"""Keys (keystore round trip, clear errors) and the client's typed errors for statuses and dead workers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shardnet.chain.devnet import free_port
from shardnet.errors import ConfigError
from tests.worker.harness import run
from worker.client import WorkerClient
from worker.errors import (
    InvalidTensor,
    NextHopFailed,
    SessionConflict,
    WorkerAPIError,
    WorkerUnavailable,
    WorkerUnreachable,
    error_for_status,
)
from worker.keys import load_account, read_password, write_keystore


def test_keystore_round_trip_and_errors(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\nignored second line\n")
    address = write_keystore(tmp_path / "k.json", read_password(pw, {}))
    assert load_account(tmp_path / "k.json", pw, None, {}).address == address
    assert (
        load_account(tmp_path / "k.json", None, None, {"SHARDNET_KEY_PASSWORD": "s3cret"}).address == address
    )
    with pytest.raises(ConfigError, match="--password-file FILE or set SHARDNET_KEY_PASSWORD"):
        load_account(tmp_path / "k.json", None, None, {})
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        write_keystore(tmp_path / "k.json", "x")
    with pytest.raises(ConfigError, match="empty keystore password"):
        write_keystore(tmp_path / "k2.json", "")
    with pytest.raises(ConfigError, match=r"\$NOPE.*not set"):
        load_account(None, None, "NOPE", {})
    with pytest.raises(ConfigError, match="valid hex private key") as err:
        load_account(None, None, "K", {"K": "0x1234"})
    assert "0x1234" not in str(err.value)
    with pytest.raises(ConfigError, match="no key given"):
        load_account(None, None, None, {})


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
