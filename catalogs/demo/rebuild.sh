#!/usr/bin/env bash
# Rebuild the demo catalog's database from catalogs/demo/source through the normal CLI.
# Idempotent: on an existing catalog every step adds nothing. --fresh starts from scratch.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# Prefer the project's virtual environment (make setup) when it exists.
if [ -z "${TSO_DATA:-}" ] && [ -x "$here/../../.venv/bin/tso-data" ]; then
  TSO_DATA="$here/../../.venv/bin/tso-data"
fi
TSO_DATA=${TSO_DATA:-tso-data}
if [ "${1:-}" = "--fresh" ]; then
  rm -f "$here/catalog.duckdb" "$here/catalog.duckdb.wal"
fi
src="$here/source"
$TSO_DATA init "$here"
$TSO_DATA models import "$src/models.jsonl" -c "$here"
$TSO_DATA ingest prompts "$src/prompts.jsonl" -c "$here" --set source=demo
$TSO_DATA ingest answers "$src/answers.jsonl" -c "$here" --prompt-source demo
$TSO_DATA ingest responses "$src/responses.jsonl" -c "$here" --prompt-source demo
$TSO_DATA ingest judgments "$src/judgments.jsonl" -c "$here" --prompt-source demo \
  --set judge=demo-checker --set rubric=overall --scale 1-10
