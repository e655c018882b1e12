"""Dependencies point one way.

- `worker` and `coordinator` import `shardnet`, never each other; `shardnet` imports neither.
- Inside `shardnet`, the units are its sub-packages (chain, model, wire, store, cli, peer, ...) and its
  top-level modules (errors.py, span.py, ...: the floor). No two units import each other, directly or
  through a longer cycle, so each can be read, tested and changed from the bottom up.

The checks read sources with `ast` (every import, including those inside functions and TYPE_CHECKING
blocks) and take them as a {relative path: source} map, so the tests below can also feed them a planted
wrong-way import and watch them fail.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROLES = ("worker", "coordinator")
FORBIDDEN = ROLES  # what shardnet must not import


def imported_modules(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """(line, module) of every absolute import in `source`, including those inside functions and TYPE_CHECKING
    blocks. `from a.b import c` gives both `a.b` and `a.b.c` (c may be a submodule)."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found += [
                (node.lineno, f"{node.module}.{alias.name}") for alias in node.names if alias.name != "*"
            ]
    return found


def relative_imports(source: str, filename: str = "<source>") -> list[int]:
    """Lines of relative imports (`from . import x`); the project spells every import in full."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source, filename))
        if isinstance(node, ast.ImportFrom) and node.level > 0
    ]


def read_sources(root: Path, package: str) -> dict[str, str]:
    """{path relative to root: source} of every .py file under root/package."""
    return {
        path.relative_to(root).as_posix(): path.read_text() for path in sorted((root / package).rglob("*.py"))
    }


def wrong_way_imports(sources: dict[str, str], forbidden: tuple[str, ...]) -> list[str]:
    """'path:line imports module' for each import of a top-level package in `forbidden`."""
    first: dict[tuple[str, int], str] = {}  # one report per import statement
    for path, source in sources.items():
        for line, module in imported_modules(source, path):
            if module.split(".")[0] in forbidden:
                first.setdefault((path, line), module)
    return [f"{path}:{line} imports {module}" for (path, line), module in sorted(first.items())]


def forbidden_imports(package: Path) -> list[str]:
    return wrong_way_imports(read_sources(package.parent, package.name), FORBIDDEN)


def unit_of(module: str, package: str = "shardnet") -> str | None:
    """The unit of `package` that `module` belongs to (`shardnet.chain.tx` -> `shardnet.chain`), or None."""
    parts = module.split(".")
    if parts[0] != package or len(parts) < 2:
        return None
    return f"{package}.{parts[1]}"


def unit_graph(sources: dict[str, str], package: str = "shardnet") -> dict[tuple[str, str], list[str]]:
    """{(from unit, to unit): ['path:line imports module', ...]} for every import between two different units."""
    edges: dict[tuple[str, str], list[str]] = {}
    for path, source in sources.items():
        module = path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        here = unit_of(module, package)
        if here is None:
            continue
        for line, imported in imported_modules(source, path):
            there = unit_of(imported, package)
            if there is not None and there != here:
                edges.setdefault((here, there), []).append(f"{path}:{line} imports {imported}")
    return edges


def import_cycles(sources: dict[str, str], package: str = "shardnet") -> list[str]:
    """One line per cycle between units of `package` (a -> b -> ... -> a), with the import behind each edge."""
    edges = unit_graph(sources, package)
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
    cycles: set[tuple[str, ...]] = set()

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                cycle = path[path.index(nxt) :]
                start = cycle.index(min(cycle))  # one spelling per cycle
                cycles.add(tuple(cycle[start:] + cycle[:start]))
            else:
                walk(nxt, [*path, nxt])

    for node in sorted(graph):
        walk(node, [node])
    out = []
    for cycle in sorted(cycles):
        hops = list(zip(cycle, (*cycle[1:], cycle[0]), strict=True))
        evidence = "; ".join(edges[hop][0] for hop in hops)
        out.append(" -> ".join((*cycle, cycle[0])) + f"  ({evidence})")
    return out


# -- the rules, on the real tree


def test_shardnet_imports_neither_worker_nor_coordinator() -> None:
    bad = forbidden_imports(ROOT / "shardnet")
    assert not bad, (
        "shardnet must not depend on the roles; move the shared code into shardnet:\n" + "\n".join(bad)
    )


@pytest.mark.parametrize("role", ROLES)
def test_roles_never_import_each_other(role: str) -> None:
    others = tuple(r for r in ROLES if r != role)
    bad = wrong_way_imports(read_sources(ROOT, role), others)
    assert not bad, (
        f"{role} must import only shardnet (and itself); move what both roles need into shardnet:\n"
        + "\n".join(bad)
    )


def test_no_two_shardnet_units_import_each_other() -> None:
    cycles = import_cycles(read_sources(ROOT, "shardnet"))
    assert not cycles, (
        "shardnet's sub-packages and modules must import one way; move the shared piece down a floor:\n"
        + "\n".join(cycles)
    )


@pytest.mark.parametrize("package", ("shardnet", *ROLES))
def test_imports_are_spelled_in_full(package: str) -> None:
    bad = [
        f"{path}:{line}"
        for path, source in read_sources(ROOT, package).items()
        for line in relative_imports(source, path)
    ]
    assert not bad, "spell imports in full (the layering checks read absolute imports):\n" + "\n".join(bad)


def test_the_real_shardnet_has_the_expected_units() -> None:
    """A guard on the checker itself: it sees the edges that do exist (model -> store, peer -> wire)."""
    edges = unit_graph(read_sources(ROOT, "shardnet"))
    assert ("shardnet.model", "shardnet.store") in edges
    assert ("shardnet.peer", "shardnet.wire") in edges


# -- the checks fail on a wrong-way import


@pytest.mark.parametrize(
    "source",
    [
        "import worker.keys",
        "from coordinator.config import X",
        "def f():\n    from worker import keys\n",
        "import os, coordinator",
    ],
)
def test_the_check_sees_every_form_of_import(source: str) -> None:
    assert imported_modules(source)[-1][1].split(".")[0] in FORBIDDEN
    assert imported_modules("from . import worker") == []  # a relative import is shardnet's own module
    assert relative_imports("from . import worker") == [1]


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        (
            {
                "shardnet/a/__init__.py": "",
                "shardnet/a/x.py": "from shardnet.b import y\n",
                "shardnet/b/y.py": "import shardnet.a.x\n",
            },
            "shardnet.a -> shardnet.b -> shardnet.a",
        ),
        (
            {
                "shardnet/a/x.py": "from shardnet import b\n",
                "shardnet/b/y.py": "from shardnet.c.z import f\n",
                "shardnet/c/z.py": "def f():\n    from shardnet.a.x import g\n",
            },
            "shardnet.a -> shardnet.b -> shardnet.c -> shardnet.a",
        ),
        (
            {
                "shardnet/span.py": "from shardnet.chain.registry import ModelInfo\n",
                "shardnet/chain/registry.py": "from shardnet.span import LayerSpan\n",
            },
            "shardnet.chain -> shardnet.span -> shardnet.chain",
        ),
    ],
)
def test_cycles_in_synthetic_sources_are_found(sources: dict[str, str], expected: str) -> None:
    cycles = import_cycles(sources)
    assert len(cycles) == 1 and cycles[0].startswith(expected), cycles


def test_one_way_synthetic_sources_pass() -> None:
    sources = {
        "shardnet/a/x.py": "from shardnet.b import y\nimport shardnet.errors\n",
        "shardnet/b/y.py": "import shardnet.errors\nfrom shardnet.b import z\n",
        "shardnet/errors.py": "",
    }
    assert import_cycles(sources) == []


def test_a_planted_wrong_way_import_in_a_copy_of_the_tree_fails(tmp_path: Path) -> None:
    for package in ("shardnet", *ROLES):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    assert import_cycles(read_sources(tmp_path, "shardnet")) == []

    cid = tmp_path / "shardnet/store/cid.py"
    cid.write_text(
        cid.read_text() + "\n\ndef _planted() -> None:\n    from shardnet.model.block import Block\n"
    )
    cycles = import_cycles(read_sources(tmp_path, "shardnet"))
    assert any(c.startswith("shardnet.model -> shardnet.store -> shardnet.model") for c in cycles), cycles
    assert any("shardnet/store/cid.py" in c and "shardnet.model.block" in c for c in cycles), cycles

    pipeline = tmp_path / "coordinator/pipeline.py"
    pipeline.write_text("from worker.sessions import Session\n" + pipeline.read_text())
    assert wrong_way_imports(read_sources(tmp_path, "coordinator"), ("worker",)) == [
        "coordinator/pipeline.py:1 imports worker.sessions"
    ]
    tx = tmp_path / "shardnet/chain/tx.py"
    tx.write_text(tx.read_text() + "\nimport coordinator.state\n")
    assert any(line.startswith("shardnet/chain/tx.py:") for line in forbidden_imports(tmp_path / "shardnet"))
