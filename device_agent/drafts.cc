#include "device_agent/drafts.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "kernels/cpu/quant_blocks.h"

namespace edgesplit {

absl::StatusOr<std::unique_ptr<Drafter>> MakeDrafter(
    const std::string& spec, const std::string& model_dir,
    const ModelConfig& target, const SamplingParams& sampling,
    DraftCache* cache) {
  if (spec == "lookup") return std::make_unique<PromptLookupDrafter>();
  const std::string key = absl::StrCat(spec, "|", model_dir);
  if (cache->key != key) {
    cache->pipeline.reset();
    cache->store.reset();
    cache->key.clear();
    StageOptions o;
    o.copy_weights = true;
    std::string dir = spec;
    if (absl::StartsWith(spec, "self:")) {
      const std::string type = spec.substr(5);
      auto w = kernels::ParseWeightType(type);
      if (!w.has_value() || (*w != kernels::WeightType::kQ8_0 &&
                             *w != kernels::WeightType::kQ4_0)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "draft \"", spec, "\": a self-draft is self:q8_0 or self:q4_0"));
      }
      o.weights = *w;
      dir = model_dir;
    }
    auto store = ModelStore::Open(dir);
    if (!store.ok()) {
      return absl::Status(store.status().code(),
                          absl::StrCat("draft \"", spec,
                                       "\" (\"lookup\", \"self:q8_0\", "
                                       "\"self:q4_0\" or a model directory): ",
                                       store.status().message()));
    }
    const ModelConfig& c = (*store)->config();
    if (c.vocab_size != target.vocab_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("draft \"", spec, "\": its vocabulary has ",
                       c.vocab_size, " tokens, the model's ", target.vocab_size,
                       " (a draft must share the tokenizer)"));
    }
    ES_ASSIGN_OR_RETURN(cache->pipeline, LocalPipeline::Load(**store, {}, o));
    cache->store = *std::move(store);
    cache->key = key;
  }
  return std::make_unique<ModelDrafter>(cache->pipeline.get(), spec, sampling);
}

}  // namespace edgesplit
