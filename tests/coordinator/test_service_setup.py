"""`coordinator run`'s setup: its help text, and the on-chain approval check (real anvil, in process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.config import CoordinatorConfig, load_config
from tests.service_proc import REPO


def test_help_explains_every_setting() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "coordinator.cli", "run", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    flat = " ".join(out.split())
    for name, info in CoordinatorConfig.model_fields.items():
        flag = "--" + name.replace("_", "-")
        assert flag in out, flag
        assert " ".join((info.description or "").split())[:40] in flat, name


def test_unapproved_account_is_told_to_ask_the_owner(registry_for, accounts, tmp_path: Path) -> None:
    from coordinator.service import CoordinatorService, NotCoordinatorError

    cfg = load_config({"data_dir": tmp_path, "store_dir": tmp_path / "store"}, None, {})
    me = accounts[7]
    service = CoordinatorService(cfg, registry_for(me), me)
    try:
        with pytest.raises(
            NotCoordinatorError, match=rf"setCoordinator\({me.address}.*shardnet devnet --coordinator"
        ):
            service.check_approved()
        registry_for(accounts[0]).set_coordinator(me.address, "http://127.0.0.1:1", True)
        service.check_approved()
    finally:
        service.engine.dispose()


def test_confirmations_reach_the_coordinators_watcher(registry_for, accounts, tmp_path: Path) -> None:
    from coordinator.service import CoordinatorService

    cfg = load_config(
        {"data_dir": tmp_path, "store_dir": tmp_path / "store"},
        None,
        {"SHARDNET_COORDINATOR_CONFIRMATIONS": "3"},
    )
    service = CoordinatorService(cfg, registry_for(accounts[7]), accounts[7])
    try:
        assert cfg.confirmations == 3 and service.watcher.confirmations == 3
        assert service.service_lifecycle.phase == "created"
    finally:
        service.engine.dispose()
