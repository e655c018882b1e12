#!/usr/bin/env bash
# The main job: installs what is missing (scripts/setup.sh), then runs a real paid inference job on a
# local shardnet (scripts/demo.py): anvil, the registry, SmolLM2-135M split over 3 worker processes, a
# coordinator, a client paying by contract call. Extra arguments go to scripts/demo.py (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
exec .venv/bin/python scripts/demo.py "$@"
