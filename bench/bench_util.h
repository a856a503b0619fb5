// Small helpers of the benchmark programs: a failed setup step ends the
// program with its message (a benchmark has nothing to recover), and
// `--name value` flags, and the corpus the training benches share.
#ifndef EDGESPLIT_BENCH_BENCH_UTIL_H_
#define EDGESPLIT_BENCH_BENCH_UTIL_H_

#include <algorithm>
#include <cstdlib>
#include <iostream>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/train/training_data.h"
#include "testing/test_paths.h"

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

// The shared Shakespeare corpus as windows of 64 tokens (+ label), at most
// `train` of them to train on and `held_out` to evaluate.
inline TrainingData Shakespeare(const Tokenizer& tok, size_t train,
                                size_t held_out) {
  TrainingDataOptions o;
  o.sequence_tokens = 64;
  o.held_out_fraction = 0.1;
  auto data =
      Must(LoadTrainingData(testing::SharedDir() + "/data/tinyshakespeare.txt",
                            tok, o),
           "Shakespeare");
  data.train.resize(std::min(data.train.size(), train));
  data.held_out.resize(std::min(data.held_out.size(), held_out));
  return data;
}

}  // namespace edgesplit::bench

#endif  // EDGESPLIT_BENCH_BENCH_UTIL_H_
