"""`shardnet finetune` in one process: trains, prints the loss curve, saves a loadable adapter."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from eth_account.signers.local import LocalAccount

from shardnet.chain.deploy import Deployment
from shardnet.chain.registry import Registry
from shardnet.cli import main
from shardnet.finetune.params import TrainableParams
from tests.finetune.harness import serve_workers
from tests.finetune.test_remote_training import tiny_examples
from tests.fixtures_model import TinyModel


def test_finetune_command_trains_and_saves_the_adapter(
    tmp_path: Path, tiny_models: Callable[[str], TinyModel], capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = tiny_models("llama")
    model_dir = _model_folder(tmp_path, tiny)
    data = tmp_path / "train.jsonl"
    data.write_text(
        "\n".join(
            json.dumps({"prompt_ids": e.prompt, "completion_ids": e.completion}) for e in tiny_examples()
        )
    )
    out = tmp_path / "adapter.safetensors"
    argv = ["finetune", "--model", str(model_dir), "--data", str(data), "--method", "prompt", "--steps", "6",
            "--batch-size", "4", "--lr", "0.01", "--prompt-len", "3", "--eval", str(data), "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    losses = [float(line.split()[-1]) for line in printed.splitlines() if line.startswith("step ")]
    assert len(losses) == 6 and losses[-1] < losses[0]
    assert "exact match:" in printed
    assert TrainableParams.load(out).method == "prompt"


def test_finetune_refuses_a_model_folder_without_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"prompt_ids": [1], "completion_ids": [2]}))
    assert (
        main(["finetune", "--model", str(tmp_path), "--data", str(data), "--method", "lora", "--steps", "1"])
        == 1
    )
    assert "config.json is missing" in capsys.readouterr().err


def test_finetune_command_over_workers_with_tickets_of_an_approved_coordinator(
    tmp_path: Path,
    tiny_models: Callable[[str], TinyModel],
    deployment: Deployment,
    registry_for: Callable[..., Registry],
    accounts: list[LocalAccount],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`--worker` URLs in route order: spans and addresses from /health, tickets signed by --key-env's account
    in the registry's domain, checked by the workers against the chain's approved coordinators."""
    tiny = tiny_models("llama")
    gov = registry_for(accounts[0])
    coordinator = accounts[1]
    gov.set_coordinator(coordinator.address, "http://127.0.0.1:9", True)
    model_dir, data = _model_folder(tmp_path, tiny), tmp_path / "train.jsonl"
    data.write_text(
        "\n".join(
            json.dumps({"prompt_ids": e.prompt, "completion_ids": e.completion}) for e in tiny_examples()
        )
    )
    dep_file = deployment.save(tmp_path / "deployment.json")
    monkeypatch.setenv("FINETUNE_TEST_KEY", coordinator.key.hex())
    out = tmp_path / "adapter.safetensors"
    with workers_in_thread(tiny, gov) as urls:
        argv = ["finetune", "--model", str(model_dir), "--data", str(data), "--method", "lora", "--steps", "3",
                "--batch-size", "2", "--deployment", str(dep_file), "--key-env", "FINETUNE_TEST_KEY",
                "--out", str(out), *[arg for url in urls for arg in ("--worker", url)]]  # fmt: skip
        assert main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.count("step ") == 3 and printed.count("positions to be paid") == 3
    assert TrainableParams.load(out).method == "lora"


def _model_folder(tmp_path: Path, tiny: TinyModel) -> Path:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for part in tiny.parts_dir.iterdir():
        (model_dir / part.name).symlink_to(part)
    (model_dir / "config.json").write_text(json.dumps(tiny.config))
    return model_dir


@contextmanager
def workers_in_thread(tiny: TinyModel, gov: Registry) -> Iterator[list[str]]:
    """Three worker servers on their own event loop in a thread (the command runs its own loop)."""
    ready: queue.Queue[list[str] | BaseException] = queue.Queue()
    stop = threading.Event()

    async def serve() -> None:
        spans = [(0, 2), (2, 4), (4, 6)]
        async with serve_workers(tiny.parts_dir, tiny.config, spans, domain=gov.domain(),
                                 is_coordinator=gov.is_coordinator) as workers:  # fmt: skip
            ready.put([w.url for w in workers])
            while not stop.is_set():
                await asyncio.sleep(0.05)

    def run() -> None:
        try:
            asyncio.run(serve())
        except BaseException as exc:  # surfaced to the test below
            ready.put(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    got = ready.get(timeout=60)
    if isinstance(got, BaseException):
        raise got
    try:
        yield got
    finally:
        stop.set()
        thread.join(timeout=30)
