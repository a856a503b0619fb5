#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install dependencies, build,
# write a small random model (`edgesplit model init`), start a local cluster
# from configs/cluster (edgesplit-controller + two edgesplit-server daemons
# on loopback); the servers measure their compute and links, the controller
# plans the split of the random model from those measurements, and text is
# generated through it (the device keeps at least block 0). With ../shared present it also generates
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

# Mutual TLS: a CA and certificates for the controller, both servers, this
# device and the operator (configs/cluster/*.yaml point at them).
CERTS=configs/cluster/certs
if [[ ! -f $CERTS/grant.key ]]; then
  "$ES" certs init --cluster demo --out "$CERTS" --force \
    --nodes server-a,server-b --devices device
fi
export EDGESPLIT_CERTS=$CERTS  # the CLI's --certs default

# Adapters from an earlier run: what the servers fetched and the
# controller's registry (names are immutable; the demo registers again).
rm -rf /tmp/edgesplit-demo/adapters build/demo/device-adapters \
  /tmp/edgesplit-demo/controller-state/blobs \
  /tmp/edgesplit-demo/controller-state/adapters.pb

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

# Wait until both servers registered, profiled the model, and loaded the
# blocks the controller planned for them.
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

echo "--- the controller's view (edgesplit cluster status):"
"$ES" cluster status --controller 127.0.0.1:50051
echo "--- random llama-tiny through the planned split:"
"$ES" generate --controller 127.0.0.1:50051 --model-id demo-llama-tiny \
  --prompt "Once upon a time" --max-new-tokens 24 --temperature 0.8 \
  --top-k 40 --seed 7
echo "--- what-if: the planner on the seeds' network (configs/cluster/what-if.yaml):"
"$ES" plan --cluster configs/cluster/what-if.yaml --model "$MODEL"
if [[ -f ../shared/models/stories260K/config.json ]]; then
  echo "--- real stories260K through the cluster, U-shaped, greedy:"
  "$ES" generate --controller 127.0.0.1:50051 --model-id stories260K \
    --prompt "Once upon a time" --max-new-tokens 64 --temperature 0
  echo "--- split fine-tuning on Shakespeare (U-shaped: text and labels stay here):"
  rm -rf build/demo/checkpoints build/demo/shakespeare-lora \
    /tmp/edgesplit-demo/checkpoints
  "$ES" train --controller 127.0.0.1:50051 --model-id stories260K \
    --data ../shared/data/tinyshakespeare.txt --u-shaped --steps 60 \
    --lr 1e-2 --seq-len 64 --batch-tokens 256 --eval-every 30 \
    --job demo-shakespeare --checkpoint-dir build/demo/checkpoints \
    --out build/demo/shakespeare-lora
  echo "--- the exported PEFT adapter, greedy:"
  "$ES" generate --model ../shared/models/stories260K \
    --adapter build/demo/shakespeare-lora --prompt "ROMEO:" \
    --max-new-tokens 48 --temperature 0
  echo "--- the same adapter registered with the controller and served by the"
  echo "    cluster (each server fetches it, the device downloads its part):"
  "$ES" adapter register --controller 127.0.0.1:50051 --model-id stories260K \
    --name shakespeare --dir build/demo/shakespeare-lora
  "$ES" generate --controller 127.0.0.1:50051 --model-id stories260K \
    --adapter shakespeare --adapter-dir build/demo/device-adapters \
    --prompt "ROMEO:" --max-new-tokens 48 --temperature 0
  "$ES" adapter list --controller 127.0.0.1:50051
  echo "--- the split model behind the OpenAI API (edgesplit serve; any OpenAI"
  echo "    client works: base_url http://127.0.0.1:18080/v1):"
  : >"$LOGS/serve.log"
  "$ES" serve --controller 127.0.0.1:50051 --model-id stories260K \
    --adapter-dir build/demo/device-adapters --listen 127.0.0.1:18080 \
    >"$LOGS/serve.log" 2>&1 &
  serve_pid=$!
  pids+=("$serve_pid")
  for i in $(seq 1 300); do
    grep -qs "listening on" "$LOGS/serve.log" && break
    if ! kill -0 "$serve_pid" 2>/dev/null || [[ $i == 300 ]]; then
      echo "edgesplit serve did not come up; its log:" >&2
      tail -n 5 "$LOGS/serve.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  api() { curl -sS --fail-with-body --noproxy '*' "$@"; }
  api http://127.0.0.1:18080/v1/models; echo
  api http://127.0.0.1:18080/v1/completions \
    -H 'content-type: application/json' \
    -d '{"model": "stories260K:shakespeare", "prompt": "ROMEO:",
         "max_tokens": 32, "temperature": 0, "stop": ["\n\n"]}'; echo
  echo "(streamed, as server-sent events:)"
  api -N http://127.0.0.1:18080/v1/completions \
    -H 'content-type: application/json' \
    -d '{"model": "stories260K", "prompt": "Once upon a time",
         "max_tokens": 8, "temperature": 0, "stream": true}'
  kill -TERM "$serve_pid" 2>/dev/null || true
  wait "$serve_pid" || true
fi
