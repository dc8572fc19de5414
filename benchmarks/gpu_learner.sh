#!/usr/bin/env bash
# The GPU rows of BENCHMARKS.md's learner table: random-initialised Qwen2.5 0.5B and 1.5B shapes,
# bf16, one GPU, rlengine's learner rank (no Ray) against a plain PyTorch loop.
#   bash benchmarks/gpu_learner.sh [OUT_DIR] [all|compiled]
# Each configuration updates its section of BENCHMARKS.md (copied to OUT_DIR after each one).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-.}"
which="${2:-all}"
run() { python3 benchmarks/learner_throughput.py --steps 2 --repeats 1 "$@"; cp BENCHMARKS.md "$out/" 2>/dev/null || true; }
if [ "$which" = all ]; then
  run --model qwen2.5-1.5b --zero 2 --grad-ckpt on --micro-batch-tokens 16384 --profile "$out/profile_1.5b_z2_16k.txt"
  run --model qwen2.5-0.5b --zero 1 --grad-ckpt off --micro-batch-tokens 8192
  run --model qwen2.5-1.5b --zero 2 --grad-ckpt off --micro-batch-tokens 8192
  run --model qwen2.5-1.5b --zero 2 --grad-ckpt on --micro-batch-tokens 4096
  run --model qwen2.5-1.5b --zero 3 --grad-ckpt on --micro-batch-tokens 16384
fi
# learner.compile: torch.compile of every decoder layer
run --model qwen2.5-1.5b --zero 2 --grad-ckpt on --micro-batch-tokens 16384 --compile
run --model qwen2.5-1.5b --zero 2 --grad-ckpt off --micro-batch-tokens 8192 --compile
run --model qwen2.5-0.5b --zero 1 --grad-ckpt off --micro-batch-tokens 8192 --compile
