"""scripts/gas_report.py runs end to end on its own anvil, measures every state-changing function and the protocol
v2 headline figures (a whole 3-worker job, 16 jobs settled in one transaction)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: issue 9's targets: a whole 3-worker job and the per-job cost of a 16-job settlement (gas). Measured: see docs/gas.md.
WHOLE_JOB_LIMIT = 150_000  # issue 9 target (measured: docs/gas.md)
BATCH_PER_JOB_LIMIT = 40_000  # issue 9 target (measured: docs/gas.md)


def test_gas_report_measures_every_state_changing_function(tmp_path: Path) -> None:
    out = tmp_path / "gas.md"
    run = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gas_report.py"), "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    table = out.read_text()
    assert run.stdout == table + "\n"  # printed and written alike
    abi = json.loads((REPO / "shardnet" / "chain" / "artifacts" / "ShardRegistry.json").read_text())["abi"]
    writes = {
        e["name"]
        for e in abi
        if e["type"] == "function" and e["stateMutability"] in ("nonpayable", "payable")
    }
    rows = {
        line.split("|")[1].strip().strip("`"): line for line in table.splitlines() if line.startswith("| `")
    }
    assert writes | {"deployment", "settleJobs (16 jobs)", "payVerifiers (16 jobs)"} == set(rows)
    for name, line in rows.items():
        calls, low, mean, high = (int(cell.strip().replace(",", "")) for cell in line.split("|")[3:7])
        # the deployment creates two contracts (the registry and its ShardDisputes, reached by DELEGATECALL)
        limit = 10_000_000 if name == "deployment" else 6_000_000
        assert calls >= 1 and 21_000 < low <= mean <= high < limit, name
    whole = re.search(r"^whole 3-worker job: (\d+) gas$", table, re.MULTILINE)
    batch = re.search(r"^16 jobs settled in one transaction: (\d+) gas per job$", table, re.MULTILINE)
    assert whole and batch, "the headline lines are missing"
    assert int(whole.group(1)) <= WHOLE_JOB_LIMIT
    assert int(batch.group(1)) <= BATCH_PER_JOB_LIMIT
    assert re.search(
        r"^jobs/s a 30M-gas block every 2 s carries: before .* 22\.7; after", table, re.MULTILINE
    )
