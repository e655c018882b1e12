#!/usr/bin/env bash
# The quality gates; scripts/test.sh runs them before pytest, and they run alone as `bash scripts/lint.sh`.
#   .venv/bin/ruff check .            the lint rules of [tool.ruff.lint] over the whole checkout
#   .venv/bin/ruff format --check --output-format concise .
#                                     the layout `ruff format` writes, one line per file that differs
#                                     (`ruff format --diff FILE` shows how; `ruff format .` applies it)
#   .venv/bin/mypy                    [tool.mypy] in pyproject.toml: strict on shardnet/, clean on worker/
#                                     and coordinator/
# Every gate runs even when an earlier one fails, so one run lists every problem; the exit status is 1
# when any gate failed.
set -uo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m[lint]\033[0m %s\n' "$*" >&2; }

for tool in ruff mypy; do
    if [ ! -x ".venv/bin/$tool" ]; then
        say ".venv/bin/$tool is missing: run bash scripts/setup.sh (it installs the test extras of pyproject.toml)"
        exit 1
    fi
done

failed=()
gate() {
    local name=$1
    shift
    say "$name: $*"
    if ! "$@"; then
        failed+=("$name")
    fi
}

gate "ruff check" .venv/bin/ruff check .
gate "ruff format" .venv/bin/ruff format --check --output-format concise .
gate "mypy" .venv/bin/mypy

if [ ${#failed[@]} -gt 0 ]; then
    say "failed: $(IFS=,; echo "${failed[*]}" | sed 's/,/, /g'); fix what is listed above"
    say "(ruff check --fix . and ruff format . fix most lint and layout findings; mypy's need code changes)"
    exit 1
fi
say "all gates passed"
