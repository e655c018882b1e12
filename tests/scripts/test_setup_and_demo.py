"""Issue 12 item 10: setup and operator details, each pinned by a test."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.model.test_import import _tiny_checkpoint
from tests.service_proc import REPO


def _demo_module():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        spec = importlib.util.spec_from_file_location("shardnet_demo_script", REPO / "scripts" / "demo.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(REPO / "scripts"))


def test_demo_threads_per_worker_fit_the_cores() -> None:
    demo = _demo_module()
    assert [demo.default_threads(3, cores) for cores in (1, 2, 3, 4, 16)] == [1, 1, 1, 1, 5]
    assert demo.WORKERS * demo.default_threads(demo.WORKERS) <= max(os.cpu_count() or 1, demo.WORKERS)


def test_import_into_a_log_file_has_no_progress_bars(tmp_path: Path) -> None:
    ckpt = _tiny_checkpoint(tmp_path / "ckpt")
    log = tmp_path / "import.log"
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_DISABLE_PROGRESS_BARS"}
    with open(log, "w") as stderr:
        done = subprocess.run(
            [
                str(Path(sys.executable).parent / "shardnet"),
                "model",
                "import",
                str(ckpt),
                "--store",
                str(tmp_path / "store"),
            ],
            cwd=REPO,
            env={**env, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            timeout=300,
            check=False,
        )
    text = log.read_text()
    assert done.returncode == 0, text
    assert "\r" not in text and not re.search(r"\d+/\d+ \[", text), text  # no tqdm bar
    assert "Warning" not in text, text


def test_readme_states_the_node_version_anvil_needs() -> None:
    readme = (REPO / "README.md").read_text()
    assert "Node.js >= 20" in readme and "Node.js >= 18" not in readme
