#!/usr/bin/env bash
# The test command: installs what is needed (scripts/setup.sh, and a PostgreSQL server for the one
# PostgreSQL test and chromium for the dashboard's browser test when running as root on Debian), runs the quality gates (scripts/lint.sh: ruff check,
# ruff format --check, mypy) and, when they pass, the whole pytest suite.
#   bash scripts/test.sh                 # everything
#   bash scripts/test.sh tests/chain -k watcher   # extra arguments go to pytest
#   SHARDNET_LINT=0 bash scripts/test.sh tests/chain   # skip the gates while iterating (CI never does)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

if [ "${SHARDNET_LINT:-1}" != 0 ]; then
    bash scripts/lint.sh || { echo "[test] a quality gate failed (listed above): no tests were run" >&2; exit 1; }
fi

if ! command -v initdb >/dev/null && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "[test] installing PostgreSQL from Debian packages for the PostgreSQL test" >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
            || echo "[test] could not install PostgreSQL: its test will be skipped" >&2
    fi
fi

# the dashboard's browser test (tests/dashboard/test_browser.py) drives Debian's chromium through chromium-driver;
# elsewhere it is skipped with the reason
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "[test] installing chromium and chromium-driver from Debian packages for the dashboard's browser test" >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
            || echo "[test] could not install chromium: the dashboard's browser test will be skipped" >&2
    else
        echo "[test] no chromium/chromedriver and not root: the dashboard's browser test will be skipped" >&2
    fi
fi

# the multi-host tests (tests/netns) build network namespaces with iproute2's `ip` and `tc`, as root; elsewhere
# they are skipped with the reason
if ! command -v ip >/dev/null || ! command -v tc >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "[test] installing iproute2 from Debian packages for the namespace network tests" >&2
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2 >/dev/null) \
            || echo "[test] could not install iproute2: the namespace network tests will be skipped" >&2
    else
        echo "[test] no ip/tc and not root: the namespace network tests will be skipped" >&2
    fi
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
exec .venv/bin/python -m pytest -q -rs --durations=15 "$@"
