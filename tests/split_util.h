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
#include "runtime/stage_model.h"

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

// The rows a device running the embedding and blocks [0, `blocks`) of the
// model in `dir` computes for `ids` minus the last (its inputs; the last id
// is only ever a label or the final sample), one vector per row.
inline std::vector<std::vector<float>> DeviceStageRows(
    const std::string& dir, int64_t blocks, const std::vector<int32_t>& ids) {
  std::vector<std::vector<float>> rows;
  auto store = ModelStore::Open(dir);
  if (!store.ok() || ids.size() < 2) return rows;
  auto stage = StageModel::Load(**store, {{0, blocks}, true, false});
  if (!stage.ok()) return rows;
  auto cache = (*stage)->NewCache(nullptr);
  StageInput in;
  in.sequences = {{cache.get(), static_cast<int64_t>(ids.size()) - 1}};
  in.tokens =
      at::tensor(std::vector<int64_t>(ids.begin(), ids.end() - 1), at::kLong);
  auto h = (*stage)->Forward(in);
  if (!h.ok()) return rows;
  for (int64_t i = 0; i < h->size(0); ++i) {
    at::Tensor r = (*h)[i].to(at::kFloat).contiguous();
    rows.emplace_back(r.data_ptr<float>(), r.data_ptr<float>() + r.numel());
  }
  return rows;
}

}  // namespace testing
}  // namespace edgesplit

#endif  // EDGESPLIT_TESTS_SPLIT_UTIL_H_
