#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: install dependencies,
# build everything (Release), run every CTest test, then rebuild the
# untrusted-input parsers (safetensors, configs, tokenizers — no LibTorch)
# under AddressSanitizer + UBSan and run their tests again.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
(cd build && ctest --output-on-failure --timeout 900 -j2)

ASAN_TESTS="runtime_core_test|gpt2_bpe_tokenizer_test|sentencepiece_reference_test"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DEDGESPLIT_ASAN=ON -DEDGESPLIT_WITH_CUDA=OFF -DEDGESPLIT_BUILD_BENCH=OFF
cmake --build build-asan -j"$(nproc)" --target \
  runtime_core_test gpt2_bpe_tokenizer_test sentencepiece_reference_test
(cd build-asan && ctest --output-on-failure -R "^(npm_|${ASAN_TESTS})")
