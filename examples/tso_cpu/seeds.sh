#!/usr/bin/env bash
# How often does round 1 beat its base? The QUICK example (run.sh with QUICK=1: task, matrix and
# one round, all drawn from SEED) once per seed, then a table of round 1's held-out paired Δ in
# standard errors, and how many seeds fall below the integration test's margin
# (tests/e2e/test_round.py, MIN_DELTA_IN_SE).
#
#   bash examples/tso_cpu/seeds.sh                  # seeds 44..53, about 3 min each on 2 cores
#   SEEDS="44 45" bash examples/tso_cpu/seeds.sh
#
# Each seed works in $WORK/seed-N (resumable like run.sh); the summary goes to
# $WORK/quick_seeds.json.
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${WORK:-examples/tso_cpu/work-seeds}
SEEDS=${SEEDS:-44 45 46 47 48 49 50 51 52 53}
MARGIN=${MARGIN:-3.0}
PYTHON=${PYTHON:-python}
if [ -x .venv/bin/python ] && [ "$PYTHON" = python ] && ! command -v tso-data >/dev/null; then PYTHON=.venv/bin/python; fi

for seed in $SEEDS; do
  dir=$WORK/seed-$seed
  if [ -f "$dir/report/report.json" ]; then echo "seed $seed: done before"; continue; fi
  mkdir -p "$dir"
  started=$(date +%s)
  if QUICK=1 SEED=$seed WORK=$dir PYTHON=$PYTHON bash examples/tso_cpu/run.sh > "$dir/run.log" 2>&1; then
    echo "seed $seed: finished in $(( $(date +%s) - started ))s"
  else
    echo "seed $seed: run.sh failed, see $dir/run.log" >&2
  fi
done

"$PYTHON" - "$WORK" "$MARGIN" $SEEDS <<'EOF'
import json, sys
from pathlib import Path

work, margin, seeds = Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3:]
rows = []
for seed in seeds:
    path = work / f"seed-{seed}" / "report" / "report.json"
    if not path.exists():
        rows.append({"seed": int(seed), "finished": False})
        continue
    report = json.loads(path.read_text())
    round1 = report["rounds"][0]
    after = round1["policy_heldout"]
    rows.append({"seed": int(seed), "finished": True, "base_mean": round1["base_heldout"]["mean"],
                 "base_pass": round1["base_heldout"]["pass_rate"], "delta": after["delta"],
                 "delta_se": after["delta_se"], "delta_in_se": after["delta"] / after["delta_se"],
                 "policy_pass": after["pass_rate"], "matrix_ordered": bool(
                     report["checks"]["newest_largest_above_base"] and report["checks"]["base_above_older_or_smaller"])})
done = [r for r in rows if r["finished"]]
below = [r["seed"] for r in done if r["delta_in_se"] < margin]
print(f"{'seed':>5} {'base':>6} {'pass':>5} {'Δ ± se':>14} {'Δ/se':>6} {'pass after':>10} {'matrix ok':>9}")
for r in rows:
    if not r["finished"]:
        print(f"{r['seed']:>5}  (did not finish)")
        continue
    print(f"{r['seed']:>5} {r['base_mean']:6.2f} {r['base_pass']:5.0%} {r['delta']:+7.2f} ± {r['delta_se']:4.2f} "
          f"{r['delta_in_se']:+6.1f} {r['policy_pass']:10.0%} {str(r['matrix_ordered']):>9}")
print(f"round 1 below {margin:g} paired se: {len(below)} of {len(done)} seeds {below}; "
      f"unfinished: {len(rows) - len(done)}")
summary = {"margin_in_se": margin, "seeds": rows, "below_margin": below, "finished": len(done)}
(work / "quick_seeds.json").write_text(json.dumps(summary, indent=2) + "\n")
EOF
