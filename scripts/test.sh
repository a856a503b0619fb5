#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine: install dependencies,
# check formatting, build everything (Release, -Werror), run every CTest
# test and the installed example app, check the locking annotations with
# clang's thread-safety analysis, then run sanitizer builds: one clang build
# for AddressSanitizer + UBSan over the untrusted-input parsers and for the
# libFuzzer targets, ThreadSanitizer over the edge server and controller
# tests; then every libFuzzer target (scripts/fuzz.sh) for 15 s. Prints the
# minutes of each part.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS=0
part_start=0
part() {  # part NAME: closes the previous part's timing, starts NAME's.
  if [[ -n "${part_name:-}" ]]; then
    echo "== ${part_name}: $(( (SECONDS - part_start) / 60 )) min $(( (SECONDS - part_start) % 60 )) s"
  fi
  part_name=$1
  part_start=$SECONDS
}

part "dependencies"
bash scripts/install-deps.sh

part "format check"
git ls-files '*.cc' '*.h' | xargs clang-format --dry-run -Werror

part "build"
bash scripts/build.sh

part "tests"
(cd build && ctest --output-on-failure --timeout 900 -j2)

part "installed example app"
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

part "clang: ASan + UBSan tests, libFuzzer targets"
# One clang build (build-fuzz: ASan + UBSan + libFuzzer coverage, and
# -Wthread-safety -Werror) for the sanitizer tests of the untrusted-input
# parsers and CPU kernels (no LibTorch: a LibTorch-linked sanitizer build
# costs about as much as the TSan one below) and for the fuzz targets, so
# the libraries they share compile once.
ASAN_TESTS=(runtime_core_test gpt2_bpe_tokenizer_test hf_tokenizer_test jinja_test
            sentencepiece_reference_test planner_test controller_test
            kernels_test cpu_kernels_test security_test delivery_test
            privacy_test)
fuzz_list=$(bash scripts/fuzz.sh --list)  # set -e sees a failure here.
mapfile -t FUZZ_TARGETS <<<"$fuzz_list"
bash scripts/fuzz.sh --configure
cmake --build build-fuzz -j"$(nproc)" \
  --target "${ASAN_TESTS[@]}" "${FUZZ_TARGETS[@]}"
regex=$(IFS='|'; echo "${ASAN_TESTS[*]}")
(cd build-fuzz && ctest --output-on-failure -R "^(npm_|${regex})")

part "clang thread-safety analysis"
# The translation units the clang build compiled were checked there.
python3 scripts/clang_thread_safety.py --skip-built-in build-fuzz build

part "TSan"
TSAN_TESTS=(tsan_shim_test tsan_canary edge_server_test controller_test
            cpu_kernels_test delivery_test openai_test metrics_test)
# Release: -O3 with -g1 line tables (EDGESPLIT_TSAN adds them). Warnings
# are not errors here: instrumentation changes what GCC's flow analysis
# sees (a false maybe-uninitialized); the Release build enforces them.
cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DEDGESPLIT_TSAN=ON -DEDGESPLIT_WERROR=OFF -DEDGESPLIT_WITH_CUDA=OFF \
  -DEDGESPLIT_BUILD_BENCH=OFF
cmake --build build-tsan -j"$(nproc)" --target "${TSAN_TESTS[@]}"
regex=$(IFS='|'; echo "${TSAN_TESTS[*]}")
# One BLAS/OpenMP thread: LibTorch's pools are not instrumented.
(cd build-tsan && OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 \
  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
  ctest --output-on-failure --timeout 1800 -R "^(${regex})$")

part "fuzz"
# libFuzzer (clang, ASan + UBSan) over what servers parse from any caller,
# 15 s per target (built above); a crash fails the suite (scripts/fuzz.sh).
bash scripts/fuzz.sh 15 >build/fuzz.log 2>&1 || { tail -n 40 build/fuzz.log; exit 1; }
grep -E "^stat::number_of_executed_units|DONE" build/fuzz.log || true

part "done"
echo "all checks passed in $(( SECONDS / 60 )) min $(( SECONDS % 60 )) s"
