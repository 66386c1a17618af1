#!/usr/bin/env bash
# Set everything up, then run the main job on the embedded default catalog catalogs/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PATH="$PWD/.venv/bin:$PATH"
# The demo catalog's database is rebuilt from its committed sources (idempotent).
bash catalogs/demo/rebuild.sh
tso-data models list --catalog catalogs/demo
tso-data status --catalog catalogs/demo --base acme-v2-1b
