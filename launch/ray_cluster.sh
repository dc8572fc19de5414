#!/usr/bin/env bash
# Multi-node: start Ray on every node, then launch the driver on the head node.
#   head:    bash launch/ray_cluster.sh head
#   workers: bash launch/ray_cluster.sh worker <head-ip>
#   driver:  bash launch/ray_cluster.sh train configs/my_run.yaml [overrides...]
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export RAY_AUTH_MODE=disabled
case "${1:-}" in
  head)   ray start --head --port=6379 --include-dashboard=false ;;
  worker) ray start --address="${2:?head address}:6379" ;;
  train)  shift; rlengine train "$@" --ray-address auto ;;
  *) echo "usage: $0 head | worker <head-ip> | train CONFIG [overrides]" >&2; exit 2 ;;
esac
