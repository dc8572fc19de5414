#!/usr/bin/env bash
# Install with the dev extras, then run the whole test suite (CPU; slow tests included).
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch/install.sh cpu,dev,bench
. .venv/bin/activate
export RAY_AUTH_MODE=disabled VLLM_LOGGING_LEVEL=ERROR
ruff check .
python -m pytest -q -ra -p no:cacheprovider --timeout 1500 --durations=15 "$@"
