"""`scripts/storage_figures.py` runs end to end on a small input (real node processes) and prints every figure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_storage_figures_prints_every_figure(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "storage_figures.py"),
            "--mb",
            "3",
            "--workdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    for line in (
        "seal (AES-256-GCM",
        "storage overhead: n/k = 1.50; measured 1.5",
        "retrieval from 6 local nodes",
        "plain single-source fetch",
    ):
        assert line in done.stdout, done.stdout
    assert list(tmp_path.iterdir()) == []  # its scratch folder is removed
