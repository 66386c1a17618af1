#!/usr/bin/env bash
# One lent-GPU check of the CUDA paths, each step under its own timeout so one failure does not
# stop the rest. Writes everything under $OUT (default /tmp/gpu_check):
#   env.txt       nvidia-smi, python and package versions
#   pytest.txt    tests/train/test_train_cuda.py (packed vs padded, lean MLP; CUDA kernels) + CPU logprob tests
#   bench/        benchmarks/bench_train_gpu.py: ZeRO-2 packed / padded, ZeRO-3 packed (train_gpu.json, logs/)
#   vllm.json     benchmarks/check_vllm_gpu.py: vLLM backend smoke (or why it could not run)
# Missing Python packages (deepspeed and its needs) come as wheels from $WHEELS (default .whl), installed
# into /tmp/site; torch is never installed: the image's CUDA build is used.
#   usage: WHEELS=DIR PAIRS=768 BUDGET=420 bash scripts/gpu_check.sh
# BUDGET (s) bounds the whole script: the benchmark gets what the earlier steps left, less 30 s for
# the vLLM probe. ARMS and BENCH_EXTRA (more bench_train_gpu.py flags) allow a small CPU dry run.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
WHEELS=${WHEELS:-.whl}
PAIRS=${PAIRS:-768}
BUDGET=${BUDGET:-420}
ARMS=${ARMS:-zero2_packed,zero2_padded,zero3_packed}
BENCH_EXTRA=${BENCH_EXTRA:-}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
SRC="$PWD/packages/tso-data/src:$PWD/packages/tso-train/src"
t0=$(date +%s)
step() { echo "=== [$(( $(date +%s) - t0 )) s] $*"; }

step "1. environment"
{
  nvidia-smi || echo "nvidia-smi failed"
  $PY --version
  $PY -m pip list 2>/dev/null | grep -iE '^(torch|transformers|tokenizers|deepspeed|vllm|pydantic|hjson|pyarrow|duckdb|polars|pytest|numpy) '
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

step "2. install missing packages from $WHEELS (never torch)"
if ! $PY -c 'import deepspeed' >/dev/null 2>&1; then
  if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    timeout 120 $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/site "$WHEELS"/*.whl && export PYTHONPATH=/tmp/site || echo "wheel install FAILED"
  else
    echo "deepspeed missing and no wheels under $WHEELS"
  fi
fi
export PYTHONPATH="$SRC${PYTHONPATH:+:$PYTHONPATH}"
timeout 120 $PY - <<'EOF' 2>&1 | tee -a "$OUT/env.txt"
import torch, transformers
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
print("transformers", transformers.__version__)
try:
    import deepspeed; print("deepspeed", deepspeed.__version__)
except Exception as exc:
    print("deepspeed import failed:", exc)
EOF

step "3. CUDA numerics tests (packed vs padded, lean MLP)"
[ -n "${SKIP_TESTS:-}" ] || timeout 150 $PY -m pytest tests/train/test_train_cuda.py tests/train/test_train_logprobs.py -v -rs \
  -p no:cacheprovider 2>&1 | tee "$OUT/pytest.txt" | tail -25

left=$(( BUDGET - ($(date +%s) - t0) - 30 ))
step "4. training benchmark: $ARMS ($PAIRS pairs, ${left} s left for it)"
# shellcheck disable=SC2086  # BENCH_EXTRA is a list of flags
timeout "$left" $PY benchmarks/bench_train_gpu.py --out "$OUT/bench" --pairs "$PAIRS" \
  --arms "$ARMS" --arm-timeout "${ARM_TIMEOUT:-150}" $BENCH_EXTRA 2>&1 | grep -v 'Writing model shards' | tail -20

step "5. vLLM backend smoke"
timeout 60 $PY benchmarks/check_vllm_gpu.py --out "$OUT" 2>&1 | tail -5

step "done"
