#!/usr/bin/env bash
# The whole test suite: set up (bot + dev tools + the vLLM CPU server's own venv), lint,
# type-check, then pytest. `.ci/run` calls exactly this. Extra arguments go to pytest,
# e.g. scripts/test.sh -m "not vllm" to skip the real-vLLM tests while iterating.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh local,dev,memory,train
# The dashboard's browser tests: Debian's Chromium (with CJK fonts for the Chinese
# pages) and Playwright for Python, which drives that binary; Playwright's own
# browser download is never used. Without root (a developer's machine) they are
# left to the developer, and those tests say why they skip.
if ! dpkg -s chromium fonts-noto-cjk >/dev/null 2>&1 && [ "$(id -u)" = 0 ] \
    && command -v apt-get >/dev/null; then
  echo "[test] installing chromium and fonts-noto-cjk (apt)" >&2
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null
fi
if ! .venv/bin/python -c "import playwright" >/dev/null 2>&1; then
  echo "[test] installing playwright (the Python package only)" >&2
  .venv/bin/pip install -q playwright
fi
# Where Chromium is installed, a browser test that cannot start it fails, not skips.
if [ -x /usr/bin/chromium ]; then export BOT_TEST_BROWSER=required; fi
if [[ " $* " != *"not vllm"* ]]; then
  bash scripts/setup_vllm.sh
fi
.venv/bin/ruff check .
.venv/bin/mypy
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
.venv/bin/pytest "$@"
