#!/usr/bin/env bash
# Checks on a GPU (docs/gpu.md): where torch sees one, runs the model tests with blocks on cuda
# (SHARDNET_TEST_DEVICE=cuda: tests/model/test_device.py, each dtype within its stated tolerance) and the
# throughput benchmark with 3 workers sharing that GPU (`scripts/bench.py concurrency --device cuda`),
# printing the figures. Where no GPU is present it says so and exits 0 (CI is CPU-only).
#   bash scripts/gpu_check.sh                        # tests, then the benchmark at 1,4,16,64 sessions
#   GPU_CHECK_LEVELS=1,16 GPU_CHECK_TOKENS=16 bash scripts/gpu_check.sh
#   GPU_CHECK_BENCH=0 bash scripts/gpu_check.sh      # the tests only
#   GPU_CHECK_BENCH_ARGS="--max-batch 64" bash scripts/gpu_check.sh   # more flags for the benchmark
#   GPU_CHECK_PYTHON=/opt/venv/bin/python bash scripts/gpu_check.sh   # a Python whose torch is a CUDA build
# Output is also written to $GPU_CHECK_LOG (default .shardnet/gpu_check.log).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${GPU_CHECK_PYTHON:-.venv/bin/python}  # an interpreter whose torch is a CUDA build (setup.sh installs the CPU one)
[ -x "$PY" ] || PY=python3
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
LOG=${GPU_CHECK_LOG:-.shardnet/gpu_check.log}
mkdir -p "$(dirname "$LOG")"

smi_sees=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    smi_sees=1
fi
torch_sees=$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))' 2>/dev/null || echo 0)

if [ "$torch_sees" != 1 ]; then
    if [ "$smi_sees" = 1 ]; then
        echo "[gpu_check] nvidia-smi lists a GPU but torch does not see it:" >&2
        nvidia-smi -L >&2
        "$PY" -c 'import torch; print(f"torch {torch.__version__}, CUDA build {torch.version.cuda}")' >&2
        echo "[gpu_check] scripts/setup.sh installs the CPU build: install a CUDA build matching the driver" \
            "(pip install torch --index-url https://download.pytorch.org/whl/cu124, say), or point" \
            "GPU_CHECK_PYTHON at a Python that has one, or check CUDA_VISIBLE_DEVICES" >&2
        exit 1
    fi
    echo "[gpu_check] no GPU on this machine (no nvidia-smi GPU, torch.cuda.is_available() is False):" \
        "nothing to check; CPU tests cover the device plumbing (tests/model/test_device.py on cpu)"
    exit 0
fi

{
    echo "[gpu_check] $(date -u +%FT%TZ) on $(hostname)"
    [ "$smi_sees" = 1 ] && nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv
    "$PY" - <<'EOF'
import torch
d = torch.device("cuda", 0)
free, total = torch.cuda.mem_get_info(d)
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s); "
      f"cuda:0 {torch.cuda.get_device_name(d)}, bf16 {torch.cuda.is_bf16_supported()}, "
      f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB free")
EOF
} 2>&1 | tee "$LOG"

status=0
echo "[gpu_check] model tests with blocks on cuda (tests/model/test_device.py, tests/worker/test_placement.py)" | tee -a "$LOG"
SHARDNET_TEST_DEVICE=cuda "$PY" -m pytest -q -s -p no:cacheprovider tests/model/test_device.py \
    tests/worker/test_placement.py 2>&1 | tee -a "$LOG" | grep -e "\[measured\]" -e passed -e failed -e Error
[ "${PIPESTATUS[0]}" = 0 ] || status=1

if [ "${GPU_CHECK_BENCH:-1}" != 0 ]; then
    levels=${GPU_CHECK_LEVELS:-1,4,16,64}
    tokens=${GPU_CHECK_TOKENS:-32}
    echo "[gpu_check] throughput: SmolLM2 over 3 workers sharing cuda:0, levels $levels, $tokens tokens ${GPU_CHECK_BENCH_ARGS:-}" | tee -a "$LOG"
    # shellcheck disable=SC2086  # GPU_CHECK_BENCH_ARGS: more flags, e.g. "--max-batch 64"
    "$PY" scripts/bench.py concurrency --device cuda --levels "$levels" --tokens "$tokens" \
        --work-dir .shardnet/bench-gpu ${GPU_CHECK_BENCH_ARGS:-} 2>&1 | grep -v -e Warning -e "warnings.warn(" | tee -a "$LOG"
    [ "${PIPESTATUS[0]}" = 0 ] || status=1
    [ "$smi_sees" = 1 ] && nvidia-smi --query-gpu=memory.used,memory.total --format=csv | tee -a "$LOG"
fi
echo "[gpu_check] done (status $status); figures in $LOG" | tee -a "$LOG"
exit $status
