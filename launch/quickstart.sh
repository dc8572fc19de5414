#!/usr/bin/env bash
# Install, then a short GRPO run of the built-in model on CPU, then an eval of the result.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install.sh cpu
. .venv/bin/activate
export RAY_AUTH_MODE=disabled VLLM_LOGGING_LEVEL=ERROR
rlengine train configs/quickstart.yaml "$@"
checkpoint=$(ls -d runs/quickstart/checkpoints/step_* | sort -t_ -k2 -n | tail -1)
rlengine eval --model "$checkpoint/model" --benchmarks gsm8k --limit 20 --max-tokens 256
