"""No module over 400 lines in shardnet/, worker/ and coordinator/: a module that grows past it is split
by what its parts hold, so each can be read in one sitting.

The check takes a {relative path: source} map (like tests/test_layering.py), so the tests below can feed it
a planted long module and watch it fail. A file on `OVER_LIMIT_ALLOWED` is let through only while another
branch is splitting it, with the reason beside it; an entry that is no longer needed fails too.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("shardnet", "worker", "coordinator")
MAX_LINES = 400

# path -> why it may exceed MAX_LINES for now. Remove an entry as soon as the file is split.
OVER_LIMIT_ALLOWED: dict[str, str] = {}


def python_sources(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """{path relative to root: source} of every .py file under root/<package> for each package."""
    return {
        path.relative_to(root).as_posix(): path.read_text()
        for package in packages
        for path in sorted((root / package).rglob("*.py"))
    }


def line_counts(sources: dict[str, str]) -> dict[str, int]:
    return {path: len(source.splitlines()) for path, source in sources.items()}


def oversized(sources: dict[str, str], allowed: dict[str, str], limit: int = MAX_LINES) -> list[str]:
    """'path: N lines' for each module over `limit` lines that `allowed` does not name."""
    return [
        f"{path}: {lines} lines"
        for path, lines in sorted(line_counts(sources).items())
        if lines > limit and path not in allowed
    ]


def stale_allowances(sources: dict[str, str], allowed: dict[str, str], limit: int = MAX_LINES) -> list[str]:
    """Entries of `allowed` whose file is gone or back within `limit` lines."""
    counts = line_counts(sources)
    return [
        f"{path}: {'gone' if path not in counts else f'{counts[path]} lines'}"
        for path in sorted(allowed)
        if counts.get(path, 0) <= limit
    ]


def test_no_module_over_the_limit() -> None:
    sources = python_sources(ROOT)
    assert len(sources) > 50, f"found only {len(sources)} modules under {PACKAGES}: is ROOT right?"
    too_long = oversized(sources, OVER_LIMIT_ALLOWED)
    assert not too_long, (
        f"modules over {MAX_LINES} lines (split each by what its parts hold, as worker/server.py was):\n"
        + "\n".join(too_long)
    )


def test_every_allowance_is_still_needed() -> None:
    stale = stale_allowances(python_sources(ROOT), OVER_LIMIT_ALLOWED)
    assert not stale, (
        f"remove these entries from OVER_LIMIT_ALLOWED in {Path(__file__).name} (their files are within "
        f"{MAX_LINES} lines now):\n" + "\n".join(stale)
    )


def test_a_planted_long_module_fails() -> None:
    sources = {
        "worker/short.py": "x = 1\n" * MAX_LINES,
        "coordinator/long.py": "x = 1\n" * (MAX_LINES + 1),
        "shardnet/chain/registry.py": "x = 1\n" * (MAX_LINES + 50),
    }
    assert oversized(sources, {}) == [
        "coordinator/long.py: 401 lines",
        "shardnet/chain/registry.py: 450 lines",
    ]
    allowed = {"shardnet/chain/registry.py": "being split"}
    assert oversized(sources, allowed) == ["coordinator/long.py: 401 lines"]


def test_a_stale_allowance_fails() -> None:
    sources = {"shardnet/chain/registry.py": "x = 1\n" * MAX_LINES}
    allowed = {"shardnet/chain/registry.py": "being split"}
    assert stale_allowances(sources, allowed) == ["shardnet/chain/registry.py: 400 lines"]
    assert stale_allowances({}, {"worker/gone.py": "split"}) == ["worker/gone.py: gone"]
    assert stale_allowances({"worker/big.py": "x\n" * 401}, {"worker/big.py": "split"}) == []


def test_python_sources_reads_the_three_packages_only(tmp_path: Path) -> None:
    for relative in ("shardnet/a.py", "worker/sub/b.py", "coordinator/c.py", "tests/d.py", "worker/e.txt"):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).write_text("pass\n")
    assert sorted(python_sources(tmp_path)) == ["coordinator/c.py", "shardnet/a.py", "worker/sub/b.py"]
