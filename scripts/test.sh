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

# The device-agent package: install it, build the example app against the
# installed files only, and check the app loads the library and runs.
rm -rf build/install build/example
cmake --install build --prefix build/install >/dev/null
cmake -S examples/hello_split -B build/example -G Ninja \
  -DCMAKE_PREFIX_PATH="$PWD/build/install"
cmake --build build/example
set +e
LD_LIBRARY_PATH="$PWD/build/install/lib" build/example/hello_split \
  >/dev/null 2>&1
code=$?
set -e
if [[ $code != 2 ]]; then
  echo "example app failed to run against the installed package ($code)" >&2
  exit 1
fi
echo "example app built and ran against the installed package"

ASAN_TESTS="runtime_core_test|gpt2_bpe_tokenizer_test|sentencepiece_reference_test|planner_test|controller_test"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DEDGESPLIT_ASAN=ON -DEDGESPLIT_WITH_CUDA=OFF -DEDGESPLIT_BUILD_BENCH=OFF
cmake --build build-asan -j"$(nproc)" --target \
  runtime_core_test gpt2_bpe_tokenizer_test sentencepiece_reference_test \
  planner_test controller_test
(cd build-asan && ctest --output-on-failure -R "^(npm_|${ASAN_TESTS})")
