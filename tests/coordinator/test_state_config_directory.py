"""Coordinator building blocks without a network: its tables, its configuration, its worker directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordinator.config import load_config
from coordinator.directory import WorkerDirectory
from coordinator.lifecycle import JobLifecycle, JobState
from coordinator.router import choose_route
from coordinator.state import CoordinatorState, StepRecord
from shardnet.chain.registry import JobInfo, JobRecord, JobStatus
from shardnet.db import make_engine, session_scope
from shardnet.errors import ConfigError
from shardnet.span import LayerSpan


def _job(job_id: int, client: str) -> JobInfo:
    record = JobRecord(client, "0x" + "c0" * 20, 1, 8, 0, 10**30, 6, 1)
    return JobInfo(job_id, record, b"\x05" * 32, JobStatus.Open, 0, 0, 1)


def test_state_round_trip(tmp_path: Path) -> None:
    state = CoordinatorState(make_engine(f"sqlite:///{tmp_path / 'c.db'}"))
    lifecycle = JobLifecycle(state)
    with session_scope(state.engine) as s:
        lifecycle.on_submitted(s, 3, {"client": "0xabc", "max_tokens": 8, "escrow_wei": str(10**30)})
    lifecycle.take_prompt(_job(3, "0xABC"), "hi", {"seed": 1})
    row = state.get_job(3)
    assert (
        row is not None
        and row.status == JobState.PROMPT
        and row.client == "0xabc"
        and int(row.escrow_wei) == 10**30
    )
    lifecycle.take_prompt(_job(4, "0xdef"), "other", {})
    assert [r.job_id for r in state.jobs(statuses=[JobState.PROMPT])] == [3, 4]
    assert [r.job_id for r in state.jobs(client="0xDEF")] == [4]
    with pytest.raises(ValueError, match="lifecycle"):
        state.set_job_fields(3, status="finalized")  # the status moves only through the lifecycle

    state.save_hop(3, 0, node="0xn", endpoint="http://n", span_start=0, span_end=2, positions=0)
    state.save_hop(3, 0, positions=7)
    assert [(h.hop_index, h.positions) for h in state.hops(3)] == [(0, 7)]
    state.add_steps(
        3,
        [
            StepRecord(0, 0, 0, 5, b"\x01" * 32, b"\x02" * 32),
            StepRecord(0, 1, 5, 1, b"\x03" * 32, b"\x04" * 32, replay=True),
        ],
    )
    steps = state.steps(3)
    assert [(s.start_pos, s.n_positions, s.replay) for s in steps] == [(0, 5, False), (5, 1, True)]
    assert steps[0].input_hash == "0x" + "01" * 32

    state.add_slash(
        job_id=3, node="0xBAD", evidence_hash=b"\x09" * 32, evidence={"b": 1, "a": 2}, tx_hash="0xt"
    )
    assert state.slashed_nodes() == {"0xbad"}
    assert state.slashes()[0].evidence == '{"a":2,"b":1}'

    # a second process (or a restart) sees the same rows
    again = CoordinatorState(make_engine(f"sqlite:///{tmp_path / 'c.db'}"))
    assert again.get_job(3).prompt == "hi"


def test_config_precedence_and_errors(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text("port = 7000\nverify-share = 0.5\nstep_timeout_s = 2.0\n")
    cfg = load_config({"port": 7100}, toml, {"SHARDNET_COORDINATOR_VERIFY_SHARE": "0.25"})
    assert (cfg.port, cfg.verify_share, cfg.step_timeout_s) == (7100, 0.25, 2.0)
    assert cfg.database_url().startswith("sqlite:///") and cfg.database_url().endswith("coordinator.db")
    with pytest.raises(ConfigError, match="verify_share"):
        load_config({"verify_share": 2.0}, None, {})
    with pytest.raises(ConfigError, match="either keystore or key_env"):
        load_config({"keystore": "k.json", "key_env": "K"}, None, {})
    with pytest.raises(ConfigError, match="not valid TOML"):
        bad = tmp_path / "bad.toml"
        bad.write_text("port = = 1")
        load_config(None, bad, {})


def test_directory_liveness_exclusion_and_measurements() -> None:
    d = WorkerDirectory()
    for aid, node, span in [(1, "0xA", "0:2"), (2, "0xB", "2:4"), (3, "0xC", "2:4"), (4, "0xD", "0:4")]:
        d.set_endpoint(node, f"http://{node}/")
        d.announce(aid, node, 1, LayerSpan.parse(span))
    d.announce(5, "0xE", 2, LayerSpan(0, 4))  # another model, no endpoint known
    assert {w.address for w in d.snapshot(1)} == {"0xa", "0xb", "0xc", "0xd"}
    assert d.snapshot(2) == []  # no endpoint: not routable
    assert d.endpoint("0xA") == "http://0xA"

    d.mark_down("0xd", "refused")
    assert "0xd" not in {w.address for w in d.snapshot(1)} and d.is_down("0xD")
    d.record_health("0xD", True, 0.002)
    assert not d.is_down("0xd") and next(w for w in d.snapshot(1) if w.address == "0xd").rtt_s == 0.002

    d.exclude("0xB")
    assert [w.address for w in d.replicas(1, LayerSpan(2, 4), besides=set())] == ["0xc"]
    d.release(4)
    assert [h.address for h in choose_route(d.snapshot(1), 4)] == ["0xa", "0xc"]

    d.add_load("0xc", 2)
    d.record_step("0xc", 0.05, 2)
    c = next(w for w in d.snapshot(1) if w.address == "0xc")
    assert c.load == 2 and c.compute_per_layer_s > 0.005
    described = {(w["node"], w["assignment_id"]): w for w in d.describe()}
    assert described[("0xb", 2)]["excluded"] is True and described[("0xd", 4)]["live"] is False
