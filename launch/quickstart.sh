#!/usr/bin/env bash
# Install, train the built-in SmolLM2-135M with GRPO on CPU (about 10 minutes on 2 cores), then show
# what training did: held-out accuracy before vs after, and the reward curve.
# Extra arguments are config overrides, e.g.  bash launch/quickstart.sh trainer.max_steps=8
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install.sh cpu
. .venv/bin/activate
export VLLM_LOGGING_LEVEL=ERROR
run_dir="runs/quickstart-$(date +%Y%m%d-%H%M%S)"
rlengine train configs/quickstart.yaml "trainer.output_dir=$run_dir" "$@"
last=$(ls "$run_dir"/eval/step_*.json | sort -t_ -k2 -n | tail -1)
echo
echo "== held-out accuracy, before training vs after (paired bootstrap over the same problems) =="
rlengine eval --compare "$run_dir/eval/step_0.json" "$last"
echo
echo "== the run =="
rlengine report "$run_dir"
rlengine plot "$run_dir" --output "$run_dir/plot.png"
