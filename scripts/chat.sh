#!/usr/bin/env bash
# Quick start: set up, then chat in the terminal with a shipped persona on the embedded
# defaults (SQLite in ./data, the local transformers backend).
#   scripts/chat.sh [PERSONA] [more `bot chat` options]
# Every step says what it does on stderr; the chat screen itself holds only the chat
# (logs and warnings go to data/chat.log).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { echo "[chat.sh] $*" >&2; }
say "checking .venv (the first run installs torch and transformers: a few minutes)"
bash scripts/setup.sh local
persona="${1:-samantha}"
shift || true
model_args=()
model="${BOT_LLM__MODEL:-Qwen/Qwen2.5-0.5B-Instruct}"
say "checking the model $model"
# `bot models fetch` downloads it once (its progress bars show here, before the chat),
# and exits 3 at once when the hub cannot be reached and the model is not cached.
if ! .venv/bin/bot models fetch "$model"; then
  say "Chatting with a tiny random-weight model instead: it babbles, but every other part"
  say "is real. For real replies set BOT_LLM__MODEL to a local model directory, or use a"
  say "vLLM server: --backend openai --base-url http://HOST:8000/v1"
  .venv/bin/bot models tiny data/tiny-model >/dev/null
  model_args=(--model data/tiny-model)
fi
say "starting the chat with $persona (loading the model takes a few seconds)"
exec .venv/bin/bot chat --persona "$persona" "${model_args[@]}" "$@"
