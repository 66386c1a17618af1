#!/usr/bin/env bash
# One lent-GPU call: the CUDA correctness tests, then the training benchmark's arms most valuable
# first, each group under its own timeout, inside one overall budget. Writes under $OUT (default
# /tmp/gpu_check), at most 6 files, rewritten as each step ends so a cut-off call keeps the rest:
#   env.txt          nvidia-smi, python and package versions
#   pytest.txt       CUDA tests: packed (varlen/segments) vs padded log-probs and gradients, fp32
#                    and bf16; lean MLP; the packed-attention CPU tests
#   train_gpu.json   benchmarks/bench_train_gpu.py, every arm (rewritten after each)
#   attention.json   benchmarks/bench_attention_gpu.py: packed-row attention kernels, layer-sized
#   bench.log        the benchmark's own output
#   table.txt        the table of every arm, and tso-train against TRL per model size
# Missing Python packages (deepspeed, trl, datasets and their needs) come as wheels from $WHEELS
# (default .whl), installed into /tmp/site; torch is never installed: the image's CUDA build is used.
#   usage: BUDGET=480 bash scripts/gpu_check.sh
# A CPU rehearsal at tiny size (no GPU: the CUDA tests skip, the arms train a tiny model):
#   PYTHON=.venv/bin/python BENCH_EXTRA='--tiny --no-bf16 --pairs 64 --global-batch 16 --steps 3 --max-length 128' \
#     ATTN_EXTRA=--tiny OUT=/tmp/rehearsal bash scripts/gpu_check.sh
# The arm groups (ARMS_A ... ARMS_D) can be replaced; names as in benchmarks/gpu_arms.py.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
WHEELS=${WHEELS:-.whl}
BUDGET=${BUDGET:-480}
BENCH_EXTRA=${BENCH_EXTRA:-}
ATTN_EXTRA=${ATTN_EXTRA:-}
PY=${PYTHON:-python3}
ARMS_A=${ARMS_A:-z2-packed-0.5b,z2-padded-0.5b,trl-0.5b}
ARMS_B=${ARMS_B:-z2-packed-1.5b,z2-padded-1.5b,trl-1.5b}
ARMS_C=${ARMS_C:-z3-packed-0.5b,z3-padded-0.5b}
ARMS_D=${ARMS_D:-z2-packed-0.5b-segments,z2-packed-0.5b-mb16,z2-packed-0.5b-mb32,z2-padded-0.5b-mb16,z2-packed-0.5b-fused,z2-packed-0.5b-mb32-gc,z2-packed-0.5b-flex,trl-0.5b-gc,z2-packed-0.5b-compile}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TQDM_DISABLE=1 TMPDIR=${TMPDIR:-/tmp}
t0=$(date +%s)
step() { echo "=== [$(( $(date +%s) - t0 )) s] $*"; }
left() { echo $(( BUDGET - ($(date +%s) - t0) )); }
# bench GROUP_ARMS SECONDS_RESERVED_FOR_LATER: one benchmark process over a group of arms
bench() {
  local budget=$(( $(left) - $2 ))
  if [ "$budget" -lt 40 ]; then echo "skipped ($budget s left for it): $1"; return; fi
  # shellcheck disable=SC2086  # BENCH_EXTRA is a list of flags
  timeout "$budget" $PY -m benchmarks.bench_train_gpu --out "$OUT" --arms "$1" --budget $(( budget - 10 )) \
    --arm-timeout "${ARM_TIMEOUT:-120}" $BENCH_EXTRA >>"$OUT/bench.log" 2>&1
  echo "exit $? after $(( $(date +%s) - t0 )) s"
  grep -E '^\{"arm"' "$OUT/bench.log" | tail -n "$(tr ',' '\n' <<<"$1" | wc -l)" | cut -c1-400
}

step "1. environment"
{
  nvidia-smi || echo "nvidia-smi failed"
  $PY --version
  $PY -m pip list 2>/dev/null | grep -iE '^(torch|transformers|tokenizers|accelerate|datasets|trl|deepspeed|pydantic|pyarrow|fsspec|huggingface.hub|numpy|pytest) '
} >"$OUT/env.txt" 2>&1
grep -E 'H200|H100|Python|^torch |^transformers ' "$OUT/env.txt"

step "2. install missing packages from $WHEELS (never torch)"
if ! $PY -c 'import deepspeed, trl, datasets' >/dev/null 2>&1; then
  timeout 90 $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} \
    || echo "wheel install FAILED"
fi
export PYTHONPATH="$PWD/packages/tso-train/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
timeout 60 $PY -c 'import torch, transformers, deepspeed, trl, datasets
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available(),
      "| transformers", transformers.__version__, "| deepspeed", deepspeed.__version__, "| trl", trl.__version__,
      "| datasets", datasets.__version__)' 2>&1 | grep -v WARNING | tee -a "$OUT/env.txt"

step "3. CUDA tests (packed vs padded, fp32 and bf16; lean MLP; packed-attention glue)"
# flex attention compiles for each dtype (minutes): its CUDA cases run at the end, if time is left
timeout 100 $PY -m pytest tests/train/test_train_cuda.py tests/train/test_train_attention.py -q -rs \
  -p no:cacheprovider -k 'not flex' >"$OUT/pytest.txt" 2>&1
echo "pytest exit $?"; tail -4 "$OUT/pytest.txt"

step "4. ZeRO-2 0.5B packed (varlen) and padded, TRL 0.5B"
bench "$ARMS_A" 200

step "5. attention kernels, layer-sized"
timeout 75 $PY -m benchmarks.bench_attention_gpu --out "$OUT" $ATTN_EXTRA >>"$OUT/bench.log" 2>&1
echo "exit $?"; grep -E '^\{"variant"' "$OUT/bench.log" | cut -c1-200

step "6. 1.5B: ZeRO-2 packed and padded, TRL"
bench "$ARMS_B" 90

step "7. ZeRO-3 0.5B packed and padded"
bench "$ARMS_C" 50

step "8. tuning grid at 0.5B"
bench "$ARMS_D" 0

step "9. table"
timeout 30 $PY -m benchmarks.bench_train_gpu --out "$OUT" --table | tee "$OUT/table.txt"
if [ "$(left)" -gt 70 ]; then
  step "10. flex attention CUDA tests (time left)"
  timeout $(( $(left) - 5 )) $PY -m pytest tests/train/test_train_cuda.py -q -rs -p no:cacheprovider -k flex \
    >>"$OUT/pytest.txt" 2>&1
  echo "pytest exit $?"; tail -2 "$OUT/pytest.txt"
fi
step "done"
