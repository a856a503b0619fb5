// Helpers shared by the cross-module tests and benchmarks: greedy sampling
// options and the monolithic reference that split runs must equal.
#ifndef EDGESPLIT_TESTS_SPLIT_UTIL_H_
#define EDGESPLIT_TESTS_SPLIT_UTIL_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "base/status_macros.h"
#include "edgesplit/device_agent.h"
#include "runtime/generator.h"
#include "runtime/model_store.h"

namespace edgesplit {
namespace testing {

// Greedy decoding of exactly `n` tokens (EOS does not stop it).
inline SamplingOptions GreedyTokens(int n) {
  SamplingOptions s;
  s.temperature = 0;
  s.max_new_tokens = n;
  s.stop_at_eos = false;
  return s;
}

// Greedy tokens of the whole model in one process: what every split of it
// must produce. Stops at EOS when `stop_at_eos`.
// With `cuts` and `per_stage` (one per stage): the same split in one
// process, each stage with its own options (a plan's weight types).
inline absl::StatusOr<std::vector<int32_t>> LocalGreedy(
    const std::string& dir, const std::string& prompt, int n, bool stop_at_eos,
    const std::vector<int64_t>& cuts,
    const std::vector<StageOptions>& per_stage) {
  ES_ASSIGN_OR_RETURN(auto store, ModelStore::Open(dir));
  ES_ASSIGN_OR_RETURN(auto tok, store->LoadTokenizer());
  ES_ASSIGN_OR_RETURN(auto pipeline,
                      LocalPipeline::Load(*store, cuts, per_stage));
  auto seq = pipeline->NewSequence();
  GenerationOptions o;
  o.sampling.temperature = 0;
  o.max_new_tokens = n;
  o.stop_at_eos = stop_at_eos;
  ES_ASSIGN_OR_RETURN(GenerationResult r, Generate(*seq, *tok, prompt, o));
  return r.tokens;
}

inline absl::StatusOr<std::vector<int32_t>> MonolithicGreedy(
    const std::string& dir, const std::string& prompt, int n,
    bool stop_at_eos = true,
    kernels::WeightType weights = kernels::WeightType::kF32) {
  StageOptions so;
  so.weights = weights;
  return LocalGreedy(dir, prompt, n, stop_at_eos, {}, {so});
}

}  // namespace testing
}  // namespace edgesplit

#endif  // EDGESPLIT_TESTS_SPLIT_UTIL_H_
