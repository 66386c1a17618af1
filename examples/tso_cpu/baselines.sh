#!/usr/bin/env bash
# The paper's comparisons as arms, each one round from the round-1 base (arith-v2-s) on the same
# budget (pair count N, epochs, batch, learning rate), over several seeds:
#
#   arm          pairs (snapshot)                                        loss       parts  paper
#   tso          TSO round 1: matrix + base pairs, older-or-smaller neg. dual-clip  3      -
#   tso-dpo      the tso snapshot                                        dpo        3      Table 6
#   tso-1part    the tso snapshot                                        dual-clip  1      Table 7
#   dpo-plain    matrix pairs only, single-model negatives (arith-v1-s)  dpo        1      Table 2
#   ipo          the dpo-plain snapshot                                  ipo        1      Table 2
#   neg-v1-s     matrix pairs only, negatives from arith-v1-s            dual-clip  3      Table 4
#   neg-v1-l     matrix pairs only, negatives from arith-v1-l            dual-clip  3      Table 4
#   neg-base     matrix pairs only, negatives from the base itself       dual-clip  3      Table 4
#   base-only    base pairs only, judged by the verifier (Self-Reward†)  dual-clip  3      Table 5
#   self-reward  base pairs only, judged by the base model itself        dual-clip  3      Table 5
#
#   bash examples/tso_cpu/baselines.sh        # after examples/tso_cpu/run.sh (uses its catalog)
#
# Each arm's policy is registered in family 'arith-arm' (so no matrix rule ever picks it),
# answers the held-out prompts greedily and is judged by the same verifier; report.py shows
# the mean and spread over seeds. JOBS arms train at once (one core each). Resumable like run.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
if [ -x .venv/bin/tso-data ] && ! command -v tso-data >/dev/null; then export PATH="$PWD/.venv/bin:$PATH"; fi

WORK=${WORK:-examples/tso_cpu/work}
SEEDS=${SEEDS:-43 44 45}
ARMS=${ARMS:-tso tso-dpo tso-1part dpo-plain ipo neg-v1-s neg-v1-l neg-base base-only self-reward}
JOBS=${JOBS:-2}
COMMON=${COMMON:---epochs 1 --global-batch 16 --micro-batch 16 --lr 3e-5 --max-length 64 --save-every 0}
PYTHON=${PYTHON:-python}
CAT=$WORK/catalog
JUDGE=fn:tso_data.examples.arith:score
SELF_JUDGE=fn:tso_data.examples.arith:self_judge
BASE=arith-v2-s
GREEDY="--temperature 0 --max-tokens 24 --batch-size 128 --no-progress"
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

# The base model as its own judge scores its sampled train answers once (Table 5's self-reward).
if [[ " $ARMS " == *" self-reward "* ]]; then
  ARITH_SELF_JUDGE_MODEL=$base_path step "the base judges its own samples" \
    tso-data judge -c "$CAT" --judge "$SELF_JUDGE" --model "$BASE" --where "split = 'train'"
fi

# One line per arm and seed: NAME SEED SNAPSHOT FIT-FLAGS...; snapshots are built here, in turn.
jobs_file=$(mktemp); trap 'rm -f "$jobs_file"' EXIT
for seed in $SEEDS; do
  for arm in $ARMS; do
    case $arm in
      tso)         snap=$(snapshot_path --seed "$seed");                                          fit="--loss dual-clip --parts 3" ;;
      tso-dpo)     snap=$(snapshot_path --seed "$seed");                                          fit="--loss dpo --parts 3" ;;
      tso-1part)   snap=$(snapshot_path --seed "$seed");                                          fit="--loss dual-clip --parts 1" ;;
      dpo-plain)   snap=$(snapshot_path --seed "$seed" --matrix-ratio 1 --negative arith-v1-s);   fit="--loss dpo --parts 1" ;;
      ipo)         snap=$(snapshot_path --seed "$seed" --matrix-ratio 1 --negative arith-v1-s);   fit="--loss ipo --parts 1" ;;
      neg-v1-s)    snap=$(snapshot_path --seed "$seed" --matrix-ratio 1 --negative arith-v1-s);   fit="--loss dual-clip --parts 3" ;;
      neg-v1-l)    snap=$(snapshot_path --seed "$seed" --matrix-ratio 1 --negative arith-v1-l);   fit="--loss dual-clip --parts 3" ;;
      neg-base)    snap=$(snapshot_path --seed "$seed" --matrix-ratio 1 --negative "$BASE" 2>/dev/null); fit="--loss dual-clip --parts 3" ;;
      base-only)   snap=$(snapshot_path --seed "$seed" --matrix-ratio 0 2>/dev/null);            fit="--loss dual-clip --parts 3" ;;
      self-reward) snap=$(snapshot_path --seed "$seed" --matrix-ratio 0 --judge "$SELF_JUDGE" 2>/dev/null); fit="--loss dual-clip --parts 3" ;;
      *) echo "error: unknown arm '$arm'" >&2; exit 2 ;;
    esac
    echo "$arm $seed $snap $fit" >> "$jobs_file"
  done
done

train_arm() {  # ARM SEED SNAPSHOT FIT-FLAGS...: fit, register, answer the held-out prompts
  local arm=$1 seed=$2 snap=$3; shift 3
  local name=arm-$arm-s$seed
  local out=$WORK/arms/$name log=$WORK/arms/$name.log
  mkdir -p "$WORK/arms"
  {
    if [ ! -f "$out/.done" ]; then  # `final` exists after the first part: mark completion separately
      local resume=(); [ -f "$out/checkpoints/latest" ] && resume=(--resume)
      tso-train fit "$snap" --model "$base_path" --out "$out" --seed "$seed" "$@" $COMMON "${resume[@]}"
      touch "$out/.done"
    fi
    tso-data models add "$name" -c "$CAT" --family arith-arm --version "$seed" --size-b "$size" \
      --path "$out/final" --note "arm=$arm seed=$seed snapshot=$(basename "$snap" .parquet)"
    # shellcheck disable=SC2086  # GREEDY is a list of flags
    tso-data generate -c "$CAT" --model "$name" --split heldout $GREEDY
  } > "$log" 2>&1 || { echo "error: arm $name failed; see $log" >&2; return 1; }
  printf '[%4ss] %s done\n' "$(( $(date +%s) - started ))" "$name"
}
export -f train_arm
export CAT WORK COMMON GREEDY base_path size started
printf '\n\033[1m[%4ss] %s arm fits, %s at a time (logs: %s/arms/*.log)\033[0m\n' \
  "$(( $(date +%s) - started ))" "$(wc -l < "$jobs_file")" "$JOBS" "$WORK"
# shellcheck disable=SC2016  # the inner script expands its own arguments
xargs -P "$JOBS" -L 1 bash -c 'train_arm "$@"' _ < "$jobs_file" \
  || { echo "error: an arm failed; fix the cause and rerun $0 - finished arms are skipped" >&2; exit 1; }
step "judge the arms" tso-data judge -c "$CAT" --judge "$JUDGE" --where "source LIKE 'arm-%'"
step "report" "$PYTHON" examples/tso_cpu/report.py --catalog "$CAT" --runs "$WORK/runs" --arms "$WORK/arms" --out "$WORK/report"
echo "done in $(( $(date +%s) - started ))s"
