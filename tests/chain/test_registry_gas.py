"""scripts/gas_report.py runs end to end on its own anvil and measures every state-changing function."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_gas_report_measures_every_state_changing_function(tmp_path: Path) -> None:
    out = tmp_path / "gas.md"
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gas_report.py"), "--output", str(out)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    table = out.read_text()
    assert run.stdout == table + "\n"  # printed and written alike
    abi = json.loads((REPO / "shardnet" / "chain" / "artifacts" / "ShardRegistry.json").read_text())["abi"]
    writes = {e["name"] for e in abi if e["type"] == "function" and e["stateMutability"] in ("nonpayable", "payable")}
    rows = {line.split("|")[1].strip().strip("`"): line for line in table.splitlines() if line.startswith("| `")}
    assert writes | {"deployment"} == set(rows)
    for name, line in rows.items():
        calls, low, mean, high = (int(cell.strip().replace(",", "")) for cell in line.split("|")[3:7])
        assert calls >= 1 and 21_000 < low <= mean <= high < 5_000_000, name
