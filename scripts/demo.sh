#!/usr/bin/env bash
# Set everything up, then run the main job on the embedded default catalog catalogs/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PATH="$PWD/.venv/bin:$PATH"
# rich draws tables 80 columns wide when output is not a terminal; give them room.
export COLUMNS=${COLUMNS:-150}
# The demo catalog's database is rebuilt from its committed sources (idempotent).
bash catalogs/demo/rebuild.sh
tso-data models list --catalog catalogs/demo
tso-data status --catalog catalogs/demo --round 1
# The main job: round 1's preference pairs (catalogs/demo/round.toml) into an immutable,
# content-addressed snapshot. Rerunning finds the same snapshot (same inputs, config, seed).
tso-data build --catalog catalogs/demo --round 1
tso-data snapshots list --catalog catalogs/demo
