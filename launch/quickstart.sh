#!/usr/bin/env bash
# Install, then a short GRPO run of the built-in model on CPU, then an eval of the result.
# Extra arguments are config overrides, e.g.  bash launch/quickstart.sh trainer.max_steps=8
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install.sh cpu
. .venv/bin/activate
export RAY_AUTH_MODE=disabled VLLM_LOGGING_LEVEL=ERROR
run_dir="runs/quickstart-$(date +%Y%m%d-%H%M%S)"
rlengine train configs/quickstart.yaml "trainer.output_dir=$run_dir" "$@"
checkpoint=$(ls -d "$run_dir"/checkpoints/step_* | sort -t_ -k2 -n | tail -1)
rlengine eval --model "$checkpoint/model" --benchmarks gsm8k --limit 20 --max-tokens 256
