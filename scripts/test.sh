#!/usr/bin/env bash
# The whole test suite: set up (bot + dev tools + the vLLM CPU server's own venv), lint,
# type-check, then pytest. `.ci/run` calls exactly this. Extra arguments go to pytest,
# e.g. scripts/test.sh -m "not vllm" to skip the real-vLLM tests while iterating.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh local,dev,memory,train
if [[ " $* " != *"not vllm"* ]]; then
  bash scripts/setup_vllm.sh
fi
.venv/bin/ruff check .
.venv/bin/mypy
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/pytest "$@"
