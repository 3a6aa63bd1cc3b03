#!/usr/bin/env bash
# Creates .venv with the bot and its extras (idempotent). Usage: scripts/setup.sh [EXTRAS]
# EXTRAS defaults to "local"; the test script asks for "local,dev".
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-local}"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
stamp=".venv/.installed-$extras-$(cat pyproject.toml | sha256sum | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null 2>&1 || true
  # torch first, pinned: where a CPU wheel is on disk (this project's CI machines),
  # pip takes it; elsewhere pip picks the build for your platform.
  if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    .venv/bin/pip install -q "torch==2.13.0" 2>&1 | grep -v "is ignored" || true
  fi
  .venv/bin/pip install -q -e ".[$extras]" 2>&1 | grep -v "is ignored" || true
  .venv/bin/python -c "import bot.cli" # fail here, not later, if the install is broken
  touch "$stamp"
fi
