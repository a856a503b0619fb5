// The draft SpeculativeOptions.draft names, made on this device: prompt
// lookup, the target model itself with quantized weights, or a small model
// from a directory. Draft models are loaded once and kept (DraftCache).
#ifndef EDGESPLIT_DEVICE_AGENT_DRAFTS_H_
#define EDGESPLIT_DEVICE_AGENT_DRAFTS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/generator.h"
#include "runtime/model_store.h"
#include "runtime/speculative.h"

namespace edgesplit {

// The last draft model loaded, by its spec. Not thread-safe.
struct DraftCache {
  std::string key;  // "<spec>|<target model dir>"
  std::unique_ptr<ModelStore> store;
  std::unique_ptr<LocalPipeline> pipeline;
};

// `spec`: "lookup", "self:q8_0", "self:q4_0" (the target at `model_dir`,
// quantized at load) or a model directory, whose vocabulary must be the
// target's (`target`); it samples with the target's `sampling`. Errors
// name the spec.
absl::StatusOr<std::unique_ptr<Drafter>> MakeDrafter(
    const std::string& spec, const std::string& model_dir,
    const ModelConfig& target, const SamplingParams& sampling,
    DraftCache* cache);

}  // namespace edgesplit

#endif  // EDGESPLIT_DEVICE_AGENT_DRAFTS_H_
