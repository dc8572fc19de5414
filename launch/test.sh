#!/usr/bin/env bash
# Install with the dev extras, then run the whole test suite (CPU; slow tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install.sh cpu,dev,bench
. .venv/bin/activate
# RLENGINE_NO_SKIPS=1: the environment is fixed, so a skipped test is a failure (tests/conftest.py)
export RAY_AUTH_MODE=disabled VLLM_LOGGING_LEVEL=ERROR RLENGINE_NO_SKIPS=1
ruff check .
python -m pytest -q -ra -p no:cacheprovider --timeout 1500 --durations=15 "$@"
