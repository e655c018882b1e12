"""`shardnet localnet` and the launcher under it (shardnet.localnet): a real devnet, real worker and coordinator
processes, a real paid job through them, and Ctrl-C stopping every process."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from shardnet.chain.registry import JobStatus, Registry
from shardnet.client import ShardnetClient
from shardnet.errors import ConfigError
from shardnet.http_json import HttpUnreachable, request_json
from shardnet.localnet import CLIENT, dev_account, device_flags, even_spans
from shardnet.role_process import REPO
from shardnet.span import LayerSpan
from tests.coordinator.harness import build_tiny_chat_model

_CLI = "import sys; from shardnet.cli import main; sys.exit(main(sys.argv[1:]))"


def test_even_spans_cover_every_layer_once() -> None:
    assert even_spans(30, 3) == [LayerSpan(0, 10), LayerSpan(10, 20), LayerSpan(20, 30)]
    assert even_spans(6, 4) == [LayerSpan(0, 2), LayerSpan(2, 4), LayerSpan(4, 5), LayerSpan(5, 6)]
    assert even_spans(5, 1) == [LayerSpan(0, 5)]
    with pytest.raises(ConfigError, match="1 to 6 workers"):
        even_spans(6, 7)


def test_localnet_refuses_a_work_dir_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "old.db").write_text("x")
    done = subprocess.run(
        [sys.executable, "-c", _CLI, "localnet", "--work-dir", str(tmp_path), "--model", "none"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "is not empty: give an empty or new folder" in done.stderr


def test_workers_sharing_a_gpu_split_its_memory_share() -> None:
    assert device_flags(None, 3) == []  # the workers' own default (auto)
    assert device_flags("cpu", 3) == ["--device", "cpu"]
    assert device_flags("cuda", 1) == ["--device", "cuda"]
    assert device_flags("cuda:1", 3) == ["--device", "cuda:1", "--gpu-memory-fraction", "0.2667"]


def test_localnet_refuses_a_bad_device_before_starting_anything(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _CLI, "localnet", "--work-dir", str(tmp_path / "net"), "--device", "gpu"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "not one of auto, cpu, cuda or cuda:N" in done.stderr
    assert not (tmp_path / "net").exists()  # nothing was started


def _read_lines(stream: object, into: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        into.put(line)


def _unreachable(url: str) -> bool:
    try:
        request_json("GET", url + "/health", timeout=2)
    except HttpUnreachable:
        return True
    return False


def test_localnet_command_serves_a_paid_job_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    model_dir = tmp_path / "tiny-chat"
    build_tiny_chat_model(model_dir)
    work = tmp_path / "net"
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CLI,
            "localnet",
            "--model",
            str(model_dir),
            "--workers",
            "2",
            "--work-dir",
            str(work),
            "--price-wei",
            "1000000",
            "--ready-timeout-s",
            "300",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # started as a shell starts a background job (`&`, nohup): SIGINT ignored; Ctrl-C must still stop it
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=_read_lines, args=(launcher.stdout, lines), daemon=True)
    reader.start()
    output = ""
    try:
        deadline = time.monotonic() + 400
        while "Ctrl-C stops everything" not in output:
            assert launcher.poll() is None, f"localnet exited with {launcher.returncode}:\n{output}"
            assert time.monotonic() < deadline, f"localnet not ready in time:\n{output}"
            try:
                output += lines.get(timeout=1)
            except queue.Empty:
                pass
        urls = dict(re.findall(r"^(worker\d|coordinator|devnet)\s+(http://\S+)", output, re.M))
        assert sorted(urls) == ["coordinator", "devnet", "worker1", "worker2"], output
        assert re.search(r"^worker1 .* layers 0:3", output, re.M) and re.search(
            r"^worker2 .* layers 3:6", output, re.M
        )
        deployment = re.search(r"SHARDNET_DEPLOYMENT=(\S+)", output)
        model_id = re.search(r"^model (\d+)", output, re.M)
        assert deployment and model_id, output

        registry = Registry.from_deployment(Path(deployment.group(1)), dev_account(CLIENT))
        outcome = ShardnetClient(registry).submit(
            "hi", model=int(model_id.group(1)), max_tokens=4, timeout_s=180
        )
        assert registry.get_job(outcome.job_id).status == JobStatus.Settled
        assert [h["node"].lower() for h in outcome.route] == [
            dev_account(3 + i).address.lower() for i in range(2)
        ]

        launcher.send_signal(signal.SIGINT)
        assert launcher.wait(timeout=120) == 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait(timeout=30)
    reader.join(timeout=30)
    while not lines.empty():
        output += lines.get_nowait()
    assert output.rstrip().endswith("stopped"), output[-2000:]
    assert all(_unreachable(url) for url in urls.values())
