#!/usr/bin/env bash
# Chaos soak (bench/soak_bench.cc): builds, then runs a local cluster of a
# controller and 4 edge servers (real processes) under 64 concurrent
# generating sessions and a split training job while servers are
# SIGKILLed and restarted, one is SIGSTOPped for 20 s, the controller is
# restarted and a link is slowed; prints sessions failed, wrong tokens,
# training continuity and every daemon's RSS over time. Not part of CI.
#   bash scripts/soak.sh [--minutes 10] [--sessions 64] [--servers 4] ...
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh >/dev/null
exec build/bench/soak_bench --bin build "$@"
