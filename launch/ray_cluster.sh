#!/usr/bin/env bash
# Multi-node: start Ray on every node, then launch the driver on the head node.
#   head:    bash launch/ray_cluster.sh head
#   workers: RAY_AUTH_TOKEN=<token printed by the head> bash launch/ray_cluster.sh worker <head-ip>
#   driver:  bash launch/ray_cluster.sh train configs/my_run.yaml [overrides...]
#
# Ray's token authentication stays on (RAY_AUTH_MODE=token): without it, anyone who can reach the
# head's port 6379 can run code on every node. The head generates a token (saved in
# ~/.ray/auth_token, or taken from RAY_AUTH_TOKEN) and prints it; every worker and the driver need
# the same token, through RAY_AUTH_TOKEN or that file. Only a local single-machine Ray (what
# `rlengine train` starts by itself) may run without it.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export RAY_AUTH_MODE=token
case "${1:-}" in
  head)
    token="${RAY_AUTH_TOKEN:-$(ray get-auth-token --generate)}"
    ray start --head --port=6379 --include-dashboard=false
    echo "Ray head started with token authentication. On every worker node run:"
    echo "  RAY_AUTH_TOKEN=$token bash launch/ray_cluster.sh worker $(hostname -I | awk '{print $1}')"
    ;;
  worker)
    if [ -z "${RAY_AUTH_TOKEN:-}" ] && [ ! -s "$HOME/.ray/auth_token" ]; then
      echo "worker: set RAY_AUTH_TOKEN to the token the head printed (or copy its ~/.ray/auth_token)" >&2
      exit 2
    fi
    ray start --address="${2:?head address}:6379"
    ;;
  train) shift; rlengine train "$@" --ray-address auto ;;
  *) echo "usage: $0 head | worker <head-ip> | train CONFIG [overrides]" >&2; exit 2 ;;
esac
