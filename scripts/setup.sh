#!/usr/bin/env bash
# Create (or update) the project-local virtual environment .venv with both packages
# installed in editable mode. Idempotent: a second run with unchanged pyproject files
# and constraints does nothing. torch comes as the CPU build pinned in constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.tso-setup-stamp
want=$(cat constraints.txt pyproject.toml packages/*/pyproject.toml | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "[setup] installing into .venv (first run takes a few minutes)"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c constraints.txt \
  -e packages/tso-data -e packages/tso-train -e ".[dev]"
echo "$want" > "$stamp"
echo "[setup] done"
