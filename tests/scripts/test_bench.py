"""`scripts/bench.py`, the one entry point of the benchmarks: every benchmark has help, and the cheap one runs."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.service_proc import REPO


def bench(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench.py"), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def load_bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """scripts/bench.py as a module (in this process: its help needs no subprocess); sys.path is restored after."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    spec = importlib.util.spec_from_file_location("bench_entry", REPO / "scripts" / "bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["network", "workers", "hop", "netns"])
def test_every_benchmark_has_help(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = load_bench(monkeypatch)
    with pytest.raises(SystemExit) as listed:
        module.main(["--help"])
    out = capsys.readouterr().out
    assert listed.value.code == 0 and re.search(rf"^\s+{name}\s+\S", out, re.M), out
    with pytest.raises(SystemExit) as own:
        module.main([name, "--help"])
    out = capsys.readouterr().out
    assert (
        own.value.code == 0 and out.startswith(f"usage: scripts/bench.py {name}") and "--work-dir" in out
    ), out


def test_a_name_is_required(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit) as bare:
        load_bench(monkeypatch).main([])
    assert bare.value.code == 2 and "NAME" in capsys.readouterr().err


def test_the_hop_benchmark_measures_both_hops(tmp_path: Path) -> None:
    done = bench("hop", "--steps", "12", "--work-dir", str(tmp_path / "bench"), timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(median of 7, ms)" in done.stdout
    figures = re.findall(r"^\| (middle|last) hop .* \| (\d+\.\d\d) \|$", done.stdout, re.M)
    assert [kind for kind, _ in figures] == ["middle", "last"], done.stdout
    assert all(float(ms) > 0 for _, ms in figures)
