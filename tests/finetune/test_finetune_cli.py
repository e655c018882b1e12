"""`shardnet finetune` in one process: trains, prints the loss curve, saves a loadable adapter."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from shardnet.cli import main
from shardnet.finetune.params import TrainableParams
from tests.finetune.test_remote_training import tiny_examples
from tests.fixtures_model import TinyModel


def test_finetune_command_trains_and_saves_the_adapter(
    tmp_path: Path, tiny_models: Callable[[str], TinyModel], capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = tiny_models("llama")
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for part in tiny.parts_dir.iterdir():
        (model_dir / part.name).symlink_to(part)
    (model_dir / "config.json").write_text(json.dumps(tiny.config))
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
