// Small helpers of the benchmark programs: a failed setup step ends the
// program with its message (a benchmark has nothing to recover), and
// `--name value` flags.
#ifndef EDGESPLIT_BENCH_BENCH_UTIL_H_
#define EDGESPLIT_BENCH_BENCH_UTIL_H_

#include <cstdlib>
#include <iostream>
#include <string>
#include <utility>

#include "absl/status/statusor.h"

namespace edgesplit::bench {

template <typename T>
T Must(absl::StatusOr<T> v, const char* what) {
  if (!v.ok()) {
    std::cerr << what << ": " << v.status() << "\n";
    std::exit(1);
  }
  return *std::move(v);
}

inline std::string Flag(int argc, char** argv, const std::string& name,
                        const std::string& def) {
  for (int i = 1; i + 1 < argc; ++i) {
    if (argv[i] == "--" + name) return argv[i + 1];
  }
  return def;
}

}  // namespace edgesplit::bench

#endif  // EDGESPLIT_BENCH_BENCH_UTIL_H_
