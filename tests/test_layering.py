"""Dependencies point one way: `worker` and `coordinator` import `shardnet`; `shardnet` imports neither."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = ("worker", "coordinator")


def imported_modules(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """(line, module) of every import in `source`, including those inside functions and TYPE_CHECKING blocks."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def forbidden_imports(package: Path) -> list[str]:
    out = []
    for path in sorted(package.rglob("*.py")):
        for line, module in imported_modules(path.read_text(), str(path)):
            if module.split(".")[0] in FORBIDDEN:
                out.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return out


def test_shardnet_imports_neither_worker_nor_coordinator() -> None:
    bad = forbidden_imports(ROOT / "shardnet")
    assert not bad, "shardnet must not depend on the roles; move the shared code into shardnet:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    "source",
    ["import worker.keys", "from coordinator.config import X", "def f():\n    from worker import keys\n",
     "import os, coordinator"],
)
def test_the_check_sees_every_form_of_import(source: str) -> None:
    assert imported_modules(source)[-1][1].split(".")[0] in FORBIDDEN
    assert imported_modules("from . import worker") == []  # a relative import is shardnet's own module
