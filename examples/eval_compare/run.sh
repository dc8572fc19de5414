#!/usr/bin/env bash
# Evaluate two models with `rlengine eval`, then compare them with `rlengine eval --compare`.
#
#   bash examples/eval_compare/run.sh [RUN_DIR | MODEL_B] [MODEL_A]
#
#   $1  B, the model under test: a run directory (its newest checkpoints/step_N/model is used)
#       or any model `rlengine eval --model` accepts; default: runs/quickstart
#   $2  A, the baseline: default the base built-in model, smollm2-135m-instruct
#
# Environment (small defaults for a CPU): BENCHMARKS=gsm8k LIMIT=20 SAMPLES=1 MAX_TOKENS=256
# OUT=runs/eval_compare (results go to $OUT/A_<name>/ and $OUT/B_<name>/).
# The delta is B - A.
set -euo pipefail

target=${1:-runs/quickstart}
model_a=${2:-smollm2-135m-instruct}
benchmarks=${BENCHMARKS:-gsm8k}
limit=${LIMIT:-20}
samples=${SAMPLES:-1}
max_tokens=${MAX_TOKENS:-256}
out=${OUT:-runs/eval_compare}

# The newest checkpoint of a run directory: checkpoints/step_N/model with the largest N.
newest_checkpoint() {
    local best="" best_step=-1 dir step
    for dir in "$1"/checkpoints/step_*/; do
        [ -d "${dir}model" ] || continue
        step=${dir%/}
        step=${step##*step_}
        [[ $step =~ ^[0-9]+$ ]] || continue
        if (( step > best_step )); then
            best_step=$step
            best=${dir}model
        fi
    done
    [ -n "$best" ] || return 1
    echo "$best"
}

# A short label for a model: step_N for a checkpoint, else the last path component.
label() {
    local path=${1%/}
    if [ "$(basename "$path")" = model ]; then
        basename "$(dirname "$path")"
    else
        basename "$path"
    fi
}

if [ -d "$target/checkpoints" ]; then
    if ! model_b=$(newest_checkpoint "$target"); then
        echo "error: no checkpoints/step_N/model in run directory '$target'" >&2
        exit 2
    fi
elif [ -d "$target" ] && [ ! -f "$target/config.json" ]; then
    echo "error: '$target' is neither a run directory (no checkpoints/) nor a model directory" >&2
    echo "usage: bash examples/eval_compare/run.sh [RUN_DIR | MODEL_B] [MODEL_A]" >&2
    exit 2
elif [ ! -e "$target" ] && [ "$#" -eq 0 ]; then
    echo "error: default run directory '$target' not found; train one first" >&2
    echo "  (rlengine train configs/quickstart.yaml) or pass a run directory or model as \$1" >&2
    exit 2
else
    model_b=$target
fi

out_a="$out/A_$(label "$model_a")"
out_b="$out/B_$(label "$model_b")"
common=(--benchmarks "$benchmarks" --limit "$limit" --samples "$samples" --max-tokens "$max_tokens")

echo "== A: $model_a"
rlengine eval --model "$model_a" "${common[@]}" --output "$out_a"
echo "== B: $model_b"
rlengine eval --model "$model_b" "${common[@]}" --output "$out_b"
echo "== compare (delta = B - A)"
rlengine eval --compare "$out_a" "$out_b"
