#!/usr/bin/env bash
# Installs everything edgesplit needs to build, test and run on Debian 12.
# Idempotent: re-running it only installs what is missing. Needs root (or sudo).
set -euo pipefail

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

PACKAGES=(
  # Toolchain.
  build-essential cmake ninja-build ccache pkg-config git
  # LibTorch (CPU). OpenBLAS (pthread variant) matters: without it LibTorch
  # falls back to the reference BLAS, ~30x slower on matmuls here.
  libtorch-dev libopenblas0-pthread libopenblas-pthread-dev
  # RPC and serialization.
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  # TLS certificates and route-grant signatures (OpenSSL 3).
  libssl-dev
  # The daemons' operator HTTP port (probes; ops/ops_http.h).
  libcpp-httplib-dev
  # Command-line flags: --help, suggestions (ops/cli.h).
  libcli11-dev
  curl
  # Core libraries.
  libabsl-dev libyaml-cpp-dev nlohmann-json3-dev libsentencepiece-dev libre2-dev
  # tokenizer.json: Oniguruma (the regex engine Hugging Face's tokenizers
  # use) and ICU (Unicode normalization and character properties).
  libonig-dev libicu-dev
  # Tests and benchmarks; clang for its thread-safety analysis and the
  # format check (scripts/test.sh), python3 for the analysis driver.
  libgtest-dev libgmock-dev libbenchmark-dev clang clang-format python3
  # Network emulation for later cluster tests.
  iproute2
  # The controller's status page is tested in a real browser (headless,
  # driven by npm playwright-core: tests/js/status_page.js).
  chromium
)
# Node.js + npm run the reference tokenizers (tests/js) in tests. Some
# images ship them from NodeSource, whose nodejs conflicts with Debian's npm:
# only install Debian's when the commands are missing.
if ! command -v node >/dev/null; then PACKAGES+=(nodejs); fi
# kubectl renders deploy/k8s (`kubectl kustomize`) in tests: Debian's
# kubernetes-client unless the machine has a kubectl already.
if ! command -v kubectl >/dev/null; then PACKAGES+=(kubernetes-client); fi
if ! command -v npm >/dev/null; then PACKAGES+=(npm); fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all packages present"
fi

# LibTorch must pick OpenBLAS, not the reference BLAS, through Debian's
# alternatives. Select the pthread variant explicitly if it is not already.
arch_triplet=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
for alt in "libblas.so.3-${arch_triplet}" "liblapack.so.3-${arch_triplet}"; do
  target=$(update-alternatives --list "$alt" 2>/dev/null | grep openblas-pthread | head -n1 || true)
  if [[ -n "$target" ]]; then
    current=$(update-alternatives --query "$alt" | awk '/^Value:/{print $2}')
    if [[ "$current" != "$target" ]]; then
      $SUDO update-alternatives --set "$alt" "$target"
    fi
  fi
done
