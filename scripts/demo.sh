#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install dependencies, build,
# write a small random model (`edgesplit model init`), start a local cluster
# from configs/cluster (edgesplit-controller + two edgesplit-server daemons
# on loopback), and generate text through it: the device runs the first
# block, the servers the rest. With ../shared present it also generates
# from the real TinyStories model, U-shaped (the head stays on the device).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh

BIN=build
ES=$BIN/device_agent/edgesplit
LOGS=build/demo/logs
mkdir -p "$LOGS"
MODEL=build/demo/llama-tiny
if [[ ! -f $MODEL/config.json ]]; then
  "$ES" model init --arch llama --preset tiny --out "$MODEL" --seed 1
fi

pids=()
stop_cluster() {
  # SIGTERM: servers stop accepting, drain open sessions, then exit.
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop_cluster EXIT

$BIN/controller/edgesplit-controller --config configs/cluster/controller.yaml \
  >"$LOGS/controller.log" 2>&1 &
pids+=($!)
for s in a b; do
  $BIN/edge_server/edgesplit-server --config configs/cluster/server-$s.yaml \
    >"$LOGS/server-$s.log" 2>&1 &
  pids+=($!)
done

# Wait until both servers registered and loaded their blocks.
for i in $(seq 1 60); do
  if "$ES" generate --controller 127.0.0.1:50051 --model-id demo-llama-tiny \
       --prompt x --max-new-tokens 1 >/dev/null 2>&1; then
    break
  fi
  if [[ $i == 60 ]]; then
    echo "cluster did not come up; logs in $LOGS" >&2
    tail -n 5 "$LOGS"/*.log >&2
    exit 1
  fi
  sleep 0.5
done

echo "--- random llama-tiny through the cluster (device -> server-a -> server-b):"
"$ES" generate --controller 127.0.0.1:50051 --model-id demo-llama-tiny \
  --prompt "Once upon a time" --max-new-tokens 24 --temperature 0.8 \
  --top-k 40 --seed 7
if [[ -f ../shared/models/stories260K/config.json ]]; then
  echo "--- real stories260K through the cluster, U-shaped, greedy:"
  "$ES" generate --controller 127.0.0.1:50051 --model-id stories260K \
    --prompt "Once upon a time" --max-new-tokens 64 --temperature 0
fi
