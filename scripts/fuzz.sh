#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan + libFuzzer) in
# build-fuzz/ and runs each for SECONDS (default 60) from its corpus in
# build-fuzz/corpus/<target>/, seeded from the repo's fuzz/seeds/<target>/
# (and, for config_fuzz, the shipped configs/).
#   bash scripts/fuzz.sh [SECONDS]
#   bash scripts/fuzz.sh --list        the targets, one per line
#   bash scripts/fuzz.sh --configure   configure build-fuzz only
# build-fuzz is configured with the tests too: scripts/test.sh builds the
# ASan + UBSan tests in the same tree.
set -euo pipefail
cd "$(dirname "$0")/.."
TARGETS=(grant_fuzz token_fuzz config_fuzz model_files_fuzz tokenizer_fuzz jinja_fuzz
         openai_request_fuzz wire_fuzz
         peft_fuzz stage_fuzz registry_fuzz budget_fuzz)
if [[ ${1:-} == --list ]]; then
  printf '%s\n' "${TARGETS[@]}"
  exit 0
fi
cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
  -DEDGESPLIT_FUZZ=ON -DEDGESPLIT_WITH_CUDA=OFF -DEDGESPLIT_BUILD_BENCH=OFF \
  >/dev/null
[[ ${1:-} == --configure ]] && exit 0
SECONDS_EACH=${1:-60}
cmake --build build-fuzz -j"$(nproc)" --target "${TARGETS[@]}"
for t in "${TARGETS[@]}"; do
  mkdir -p "build-fuzz/corpus/$t"
  bin=$(find build-fuzz -type f -name "$t" -perm -u+x | head -n1)
  seeds=()
  [[ -d "fuzz/seeds/$t" ]] && seeds+=("fuzz/seeds/$t")
  [[ $t == config_fuzz ]] && seeds+=(configs)
  if [[ $t == tokenizer_fuzz && -f ../shared/models/stories260K/tokenizer.model ]]; then
    # The real model's tokenizer, as a seed (copied into the build tree,
    # never into the repo).
    mkdir -p build-fuzz/seeds/tokenizer_fuzz
    cp ../shared/models/stories260K/tokenizer.model build-fuzz/seeds/tokenizer_fuzz/
    seeds+=(build-fuzz/seeds/tokenizer_fuzz)
  fi
  flags=()
  # The stage service finishes a session's work on server threads after an
  # input returns, so libFuzzer's per-input malloc/free balance check fires
  # on nearly every input and runs a whole LSan pass (~150 ms, 10x the
  # input). Memory errors are still caught by ASan; leaks at exit by LSan.
  [[ $t == stage_fuzz ]] && flags+=(-detect_leaks=0)
  "$bin" -max_total_time="$SECONDS_EACH" -print_final_stats=1 "${flags[@]}" \
    "build-fuzz/corpus/$t" "${seeds[@]}"
done
