#include "runtime/draft_check.h"

#include <cmath>

#include "absl/strings/str_cat.h"

namespace edgesplit {

absl::Status DraftCheck::Validate(int64_t drafts) const {
  auto bad = [](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("draft check: ", what));
  };
  if (absl::Status s = params.Validate(); !s.ok()) {
    return bad(std::string(s.message()));
  }
  if (!(params.temperature > 0)) {
    return bad("temperature must be > 0 (greedy drafts need no check)");
  }
  if (params.repetition_penalty != 1.0f) {
    return bad("repetition_penalty must be 1 (the penalty needs the context)");
  }
  if (drafts < 0 || drafts > kMaxDraftTokens) {
    return bad(
        absl::StrCat(drafts, " draft tokens (at most ", kMaxDraftTokens, ")"));
  }
  if (static_cast<int64_t>(draft_probs.size()) != drafts ||
      static_cast<int64_t>(uniforms.size()) != drafts) {
    return bad(absl::StrCat(draft_probs.size(), " draft probabilities and ",
                            uniforms.size(), " uniforms for ", drafts,
                            " draft tokens"));
  }
  for (int64_t i = 0; i < drafts; ++i) {
    if (!(draft_probs[i] > 0 && draft_probs[i] <= 1)) {
      return bad(absl::StrCat("draft_probs[", i, "] = ", draft_probs[i],
                              " is not in (0, 1]"));
    }
    if (!(uniforms[i] >= 0 && uniforms[i] < 1)) {
      return bad(absl::StrCat("uniforms[", i, "] = ", uniforms[i],
                              " is not in [0, 1)"));
    }
  }
  return absl::OkStatus();
}

int64_t AcceptDraft(const float* logits, int64_t vocab,
                    absl::Span<const int32_t> drafts, const DraftCheck& check) {
  // The target's distribution with the generator's own code: no penalty,
  // so no context; the seed is never used (no draw).
  Sampler sampler(check.params);
  std::vector<float> p;
  const int64_t k = static_cast<int64_t>(drafts.size());
  for (int64_t i = 0; i < k; ++i) {
    sampler.Distribution({logits + i * vocab, static_cast<size_t>(vocab)}, {},
                         &p);
    const int32_t d = drafts[i];
    const double pd = d >= 0 && d < vocab ? p[d] : 0;
    const double qd = check.draft_probs[i];
    if (!KeepDraft(pd, qd, check.uniforms[i])) return i;
  }
  return k;
}

}  // namespace edgesplit
