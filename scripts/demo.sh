#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install dependencies, build,
# write a small random model with `edgesplit model init`, and generate text
# from it in one process; then the same with the real trained model in
# ../shared when it is there. (Split inference turns this into a local
# cluster of controller + edge servers.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
ES=build/device_agent/edgesplit
MODEL=build/demo/llama-tiny
if [[ ! -f $MODEL/config.json ]]; then
  "$ES" model init --arch llama --preset tiny --out "$MODEL" --seed 1
fi
"$ES" model info "$MODEL"
echo "--- random llama-tiny, split into 2 local stages (text is noise):"
"$ES" generate --model "$MODEL" --prompt "Once upon a time" \
  --max-new-tokens 24 --temperature 0.8 --top-k 40 --seed 7 --split 2
REAL=../shared/models/stories260K
if [[ -f $REAL/config.json ]]; then
  echo "--- real stories260K, greedy, 3 local stages:"
  "$ES" generate --model "$REAL" --prompt "Once upon a time" \
    --max-new-tokens 64 --temperature 0 --split 2,4
fi
