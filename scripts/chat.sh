#!/usr/bin/env bash
# Quick start: set up, then chat in the terminal with a shipped persona on the embedded
# defaults (SQLite in ./data, the local transformers backend).
#   scripts/chat.sh [PERSONA] [more `bot chat` options]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh local
persona="${1:-samantha}"
shift || true
model_args=()
model="${BOT_LLM__MODEL:-Qwen/Qwen2.5-0.5B-Instruct}"
if [ ! -d "$model" ] && ! .venv/bin/python - "$model" <<'PY' >/dev/null 2>&1
import sys
from huggingface_hub import snapshot_download
try:
    snapshot_download(sys.argv[1], local_files_only=True)
except Exception:
    snapshot_download(sys.argv[1], allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"])
PY
then
  echo "The model $model is not on this machine and the Hugging Face hub cannot be reached." >&2
  echo "Chatting with a tiny random-weight model instead: it babbles, but every other part is" >&2
  echo "real. For real replies set BOT_LLM__MODEL to a local model directory, or use a vLLM" >&2
  echo "server: --backend openai --base-url http://HOST:8000/v1" >&2
  .venv/bin/bot models tiny data/tiny-model >/dev/null
  model_args=(--model data/tiny-model)
fi
exec .venv/bin/bot chat --persona "$persona" "${model_args[@]}" "$@"
