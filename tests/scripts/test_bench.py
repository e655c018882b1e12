"""`scripts/bench.py`, the one entry point of the benchmarks: every benchmark has help, and the cheap one runs."""

from __future__ import annotations

import importlib
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


@pytest.mark.parametrize("name", ["network", "workers", "hop", "netns", "waterfall"])
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


def test_a_traced_process_appends_its_marks_and_an_untraced_one_nothing(tmp_path: Path) -> None:
    trace_file = tmp_path / "trace.txt"
    code = "from shardnet import trace; trace.mark('recv'); trace.mark('computed')"
    env = {k: v for k, v in os.environ.items() if k != "SHARDNET_TRACE"}
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True, timeout=60)
    assert not trace_file.exists()
    for _ in range(2):  # two processes share the file: each appends
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO,
            env={**env, "SHARDNET_TRACE": str(trace_file)},
            check=True,
            timeout=60,
        )
    lines = [line.split() for line in trace_file.read_text().splitlines()]
    lines = [line for line in lines if not line[2].startswith("gc2:")]  # the interpreter's exit collects
    assert [event for _, _, event in lines] == ["recv", "computed"] * 2
    assert len({pid for _, pid, _ in lines}) == 2 and all(float(t) > 1.7e9 for t, _, _ in lines)


def test_the_waterfall_cuts_each_token_at_every_mark(monkeypatch: pytest.MonkeyPatch) -> None:
    load_bench(monkeypatch)  # puts scripts/ on sys.path (restored after)
    waterfall = importlib.import_module("benchmarks.waterfall")
    lines = []
    for token in range(3):  # coordinator 10, workers 20 and 30; a worker's mark of another token between
        t = 100.0 + token
        lines += [
            f"{t:.6f} 10 step",
            f"{t + 0.001:.6f} 20 recv",
            f"{t + 0.011:.6f} 20 computed",
            f"{t + 0.012:.6f} 20 finished",
            f"{t + 0.013:.6f} 30 recv",
            f"{t + 0.033:.6f} 30 computed",
            f"{t + 0.036:.6f} 30 finished",
            f"{t + 0.037:.6f} 10 token",
        ]
    tokens = waterfall.tokens_of(list(reversed(lines)))  # marks are sorted by time first
    assert len(tokens) == 3 and [name for _, name in tokens[0]][:3] == ["C.step", "W1.recv", "W1.computed"]
    parts = waterfall.segments(tokens)
    assert parts["W1.recv -> W1.computed"] == pytest.approx(10.0, abs=1e-3)
    assert parts["W2.recv -> W2.computed"] == pytest.approx(20.0, abs=1e-3)
    assert parts["W2.finished -> C.token"] == pytest.approx(1.0, abs=1e-3)
    assert parts["C.token -> C.step (the next token's)"] == pytest.approx(963.0, abs=1e-3)
    assert sum(parts.values()) == pytest.approx(37.0 + 963.0, abs=1e-2)
