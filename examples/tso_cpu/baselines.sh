#!/usr/bin/env bash
# Baseline arms for the CPU example, each trained from the round-1 base (arith-v2-s) on the
# same budget (same pair count N, epochs, batch and learning rate), over several seeds:
#
#   tso         TSO's round-1 recipe: matrix + base pairs, older-or-smaller negatives,
#               dual-clip loss, 3 parts (reference reset before each)
#   dpo-plain   plain DPO: matrix pairs only, single-model negatives (arith-v1-s), DPO loss, 1 part
#   tso-dpo     TSO's snapshot with the DPO loss instead of dual-clip          (paper Table 6)
#   tso-1part   TSO's snapshot and loss, one part instead of three             (paper Table 7)
#
#   bash examples/tso_cpu/baselines.sh        # after examples/tso_cpu/run.sh (uses its catalog)
#
# Each arm's policy is registered in family 'arith-arm' (so no matrix rule ever picks it),
# answers the held-out prompts greedily and is judged by the same verifier; report.py
# shows mean and spread over seeds. Resumable like run.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [ -x .venv/bin/tso-data ] && ! command -v tso-data >/dev/null; then export PATH="$PWD/.venv/bin:$PATH"; fi

WORK=${WORK:-examples/tso_cpu/work}
SEEDS=${SEEDS:-43 44 45}
ARMS=${ARMS:-tso dpo-plain tso-dpo tso-1part}
COMMON=${COMMON:---epochs 2 --global-batch 16 --micro-batch 16 --lr 5e-6 --max-length 64 --save-every 0}
PYTHON=${PYTHON:-python}
CAT=$WORK/catalog
JUDGE=fn:tso_data.examples.arith:score
BASE=arith-v2-s
started=$(date +%s)
step() {
  local name=$1; shift
  printf '\n\033[1m[%4ss] %s\033[0m\n  $ %s\n' "$(( $(date +%s) - started ))" "$name" "$*"
  "$@" || { echo "error: step '$name' failed; fix the cause and rerun $0 - finished steps are skipped" >&2; exit 1; }
}
snapshot_path() {  # build flags... -> the snapshot's path (content-addressed: rebuilding is a no-op)
  tso-data build -c "$CAT" --round 1 --json "$@" | "$PYTHON" -c 'import json, sys; print(json.load(sys.stdin)["path"])'
}
sql1() { tso-data sql -c "$CAT" --csv "$1" | tail -n 1 | tr -d '\r'; }  # first value of a one-row query
base_path=$(sql1 "select path from models where name = '$BASE'")
[ -n "$base_path" ] || { echo "error: $BASE is not in $CAT; run examples/tso_cpu/run.sh first" >&2; exit 1; }
size=$(sql1 "select size_b from models where name = '$BASE'")

for seed in $SEEDS; do
  tso_snap=$(snapshot_path --seed "$seed")
  plain_snap=$(snapshot_path --seed "$seed" --matrix-ratio 1 --negative arith-v1-s)
  for arm in $ARMS; do
    case $arm in
      tso)       snap=$tso_snap;   fit=(--loss dual-clip --parts 3) ;;
      dpo-plain) snap=$plain_snap; fit=(--loss dpo --parts 1) ;;
      tso-dpo)   snap=$tso_snap;   fit=(--loss dpo --parts 3) ;;
      tso-1part) snap=$tso_snap;   fit=(--loss dual-clip --parts 1) ;;
      *) echo "error: unknown arm '$arm'" >&2; exit 2 ;;
    esac
    name="arm-$arm-s$seed"
    out="$WORK/arms/$name"
    if [ ! -f "$out/.done" ]; then  # `final` exists after the first part: mark completion separately
      resume=(); [ -f "$out/checkpoints/latest" ] && resume=(--resume)
      step "$name: fit" \
        tso-train fit "$snap" --model "$base_path" --out "$out" --seed "$seed" "${fit[@]}" $COMMON "${resume[@]}"
      touch "$out/.done"
    fi
    step "$name: register" tso-data models add "$name" -c "$CAT" --family arith-arm --version "$seed" \
      --size-b "$size" --path "$out/final" --note "arm=$arm seed=$seed snapshot=$(basename "$snap" .parquet)"
    step "$name: answer held-out prompts" tso-data generate -c "$CAT" --model "$name" --split heldout \
      --temperature 0 --max-tokens 16 --batch-size 128 --no-progress
  done
done
step "judge the arms" tso-data judge -c "$CAT" --judge "$JUDGE" --where "source LIKE 'arm-%'"
step "report" "$PYTHON" examples/tso_cpu/report.py --catalog "$CAT" --runs "$WORK/runs" --out "$WORK/report"
echo "done in $(( $(date +%s) - started ))s"
