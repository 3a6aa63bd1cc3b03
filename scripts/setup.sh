#!/usr/bin/env bash
# Creates .venv with the bot and its extras (idempotent). Usage: scripts/setup.sh [EXTRAS]
# EXTRAS defaults to "local"; the test script asks for "local,dev".
# Progress goes to stderr, one line a step; pip's own output (build warnings included)
# goes to .venv/setup.log, and its tail is shown only when a step fails.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-local}"
py="${PYTHON:-python3}"
say() { echo "[setup] $*" >&2; }
log=.venv/setup.log
if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $("$py" --version 2>&1)"
  "$py" -m venv .venv
fi
stamp=".venv/.installed-$extras-$(sha256sum < pyproject.toml | cut -c1-12)"
if [ ! -f "$stamp" ]; then
  : > "$log"
  run() {  # run a step quietly; on failure show why
    if ! "$@" >> "$log" 2>&1; then
      say "failed: $*"
      tail -n 30 "$log" >&2
      say "the whole log: $log"
      exit 1
    fi
  }
  run .venv/bin/pip install -q --upgrade pip
  # torch first, pinned: where a CPU wheel is on disk (this project's CI machines),
  # pip takes it; elsewhere pip picks the build for your platform.
  if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    say "installing torch (the largest part: a few minutes on the first run)"
    run .venv/bin/pip install -q "torch==2.13.0"
  fi
  say "installing personabot[$extras] and its dependencies"
  run .venv/bin/pip install -q -e ".[$extras]"
  run .venv/bin/python -c "import bot.cli" # fail here, not later, if the install is broken
  touch "$stamp"
  say "done: .venv is ready (the bot command is .venv/bin/bot)"
fi
