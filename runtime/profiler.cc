#include "runtime/profiler.h"

#include <algorithm>
#include <chrono>
#include <thread>
#include <vector>

#include "base/status_macros.h"
#include "runtime/model_store.h"
#include "runtime/stage_model.h"
#include "runtime/torch_util.h"

namespace edgesplit {
namespace {

double MsSince(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now() - t0)
      .count();
}

// The median time of `steps` calls of `step`, each after an idle pause: a
// decode step in a split pipeline runs after waiting for the network, with
// caches and cores gone cold, and takes longer than back to back.
template <typename Fn>
absl::StatusOr<double> TimeSteps(int steps, const ProfileOptions& options,
                                 Fn step) {
  std::vector<double> ms;
  for (int i = 0; i < steps; ++i) {
    std::this_thread::sleep_for(options.idle_between_steps);
    const auto t0 = std::chrono::steady_clock::now();
    absl::Status s = step();
    if (!s.ok()) return s;
    ms.push_back(MsSince(t0));
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

absl::StatusOr<ComputeMeasurement> ProfileCompute(
    const std::string& model_dir, const ProfileOptions& options) {
  ES_ASSIGN_OR_RETURN(auto store, ModelStore::Open(model_dir));
  const ModelConfig& config = store->config();
  const int64_t n = config.num_layers;
  StageOptions so;
  so.copy_weights = options.copy_weights;
  so.weights = options.weights;
  // Block 0 without the embedding: its input is hidden states, as on every
  // server stage.
  ES_ASSIGN_OR_RETURN(auto block,
                      StageModel::Load(*store, {{0, 1}, false, false}, so));
  ES_ASSIGN_OR_RETURN(auto head,
                      StageModel::Load(*store, {{n, n}, false, true}, so));
  ES_ASSIGN_OR_RETURN(auto embed,
                      StageModel::Load(*store, {{0, 0}, true, false}, so));
  const int prompt = static_cast<int>(std::min<int64_t>(
      options.prompt_tokens,
      std::max<int64_t>(config.max_positions - options.decode_steps - 1, 1)));
  ComputeMeasurement best{1e18, 1e18, 1e18, 1e18};
  for (int rep = 0; rep < std::max(options.repeats, 1); ++rep) {
    auto cache = block->NewCache(nullptr);
    auto head_cache = head->NewCache(nullptr);
    at::Tensor prompt_hidden, step_hidden;
    ES_RETURN_IF_ERROR(TorchCall("profile inputs", [&]() -> absl::Status {
      prompt_hidden = at::randn({prompt, config.hidden_size});
      step_hidden = at::randn({1, config.hidden_size});
      return absl::OkStatus();
    }));
    StageInput in;
    in.sequences = {{cache.get(), prompt}};
    in.hidden = prompt_hidden;
    auto t0 = std::chrono::steady_clock::now();
    ES_RETURN_IF_ERROR(block->Forward(in).status());
    best.prefill_ms_per_token =
        std::min(best.prefill_ms_per_token, MsSince(t0) / prompt);
    const int steps = std::max(options.decode_steps, 1);
    in.sequences = {{cache.get(), 1}};
    in.hidden = step_hidden;
    ES_ASSIGN_OR_RETURN(double block_ms, TimeSteps(steps, options, [&] {
                          return block->Forward(in).status();
                        }));
    best.decode_ms_per_block = std::min(best.decode_ms_per_block, block_ms);
    StageInput hin;
    hin.sequences = {{head_cache.get(), 1}};
    hin.hidden = step_hidden;
    hin.last_token_only = true;
    ES_ASSIGN_OR_RETURN(double head_ms, TimeSteps(steps, options, [&] {
                          return head->Forward(hin).status();
                        }));
    best.head_ms = std::min(best.head_ms, head_ms);
    // As a device's step does it: token ids into a tensor, then embed.
    auto embed_cache = embed->NewCache(nullptr);
    ES_ASSIGN_OR_RETURN(
        double embed_ms, TimeSteps(steps, options, [&] {
          StageInput ein;
          ein.sequences = {{embed_cache.get(), 1}};
          ES_RETURN_IF_ERROR(
              TorchCall("profile embedding", [&]() -> absl::Status {
                ein.tokens = at::tensor(std::vector<int64_t>{1}, at::kLong);
                return absl::OkStatus();
              }));
          return embed->Forward(ein).status();
        }));
    best.embed_ms = std::min(best.embed_ms, embed_ms);
  }
  return best;
}

}  // namespace edgesplit
