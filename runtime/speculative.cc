#include "runtime/speculative.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "runtime/sampling.h"

namespace edgesplit {
namespace {

double Since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
      .count();
}

}  // namespace

absl::StatusOr<Draft> PromptLookupDrafter::Propose(
    absl::Span<const int32_t> context, int k) {
  Draft out;
  const int64_t size = static_cast<int64_t>(context.size());
  for (int n = max_ngram_; n >= std::max(min_ngram_, 1); --n) {
    if (size <= n) continue;
    const absl::Span<const int32_t> tail = context.subspan(size - n);
    // Latest match first: recent text predicts best.
    for (int64_t i = size - n - 1; i >= 0; --i) {
      if (!std::equal(tail.begin(), tail.end(), context.begin() + i)) continue;
      const int64_t from = i + n;
      const int64_t take = std::min<int64_t>(k, size - from);
      out.tokens.assign(context.begin() + from, context.begin() + from + take);
      return out;
    }
  }
  return out;
}

std::string PromptLookupDrafter::Describe() const {
  return absl::StrCat("prompt lookup (n-grams ", max_ngram_, "..", min_ngram_,
                      ")");
}

namespace {

SamplingParams DraftSampling(SamplingParams p) {
  p.seed = p.seed * 0x9E3779B97F4A7C15ull + 1;  // Its own stream.
  return p;
}

}  // namespace

ModelDrafter::ModelDrafter(const LocalPipeline* pipeline,
                           std::string description,
                           const SamplingParams& sampling)
    : seq_(pipeline->NewSequence()),
      description_(std::move(description)),
      sampler_(DraftSampling(sampling)) {}

absl::StatusOr<Draft> ModelDrafter::Propose(absl::Span<const int32_t> context,
                                            int k) {
  Draft out;
  const int64_t size = static_cast<int64_t>(context.size());
  if (k <= 0 || size == 0) return out;
  // Its context is the draft model's too: draft only what fits.
  k = static_cast<int>(std::min<int64_t>(k, seq_->context_length() - size));
  if (k <= 0) return out;
  // Keep what the cache shares with the context; the last context token is
  // always fed again (its logits start the draft).
  size_t common = 0;
  while (common < fed_.size() && common < context.size() &&
         fed_[common] == context[common]) {
    ++common;
  }
  common = std::min(common, context.size() - 1);
  ES_RETURN_IF_ERROR(
      seq_->Rollback(static_cast<int64_t>(fed_.size() - common)));
  fed_.resize(common);
  ES_ASSIGN_OR_RETURN(std::vector<float> logits,
                      seq_->Forward(context.subspan(common)));
  fed_.insert(fed_.end(), context.begin() + common, context.end());
  const bool greedy = sampler_.params().temperature == 0;
  std::vector<int32_t> seen(context.begin(), context.end());
  for (int i = 0; i < k; ++i) {
    int32_t t;
    if (greedy) {
      t = sampler_.Sample(logits, seen);
    } else {
      out.probs.emplace_back();
      sampler_.Distribution(logits, seen, &out.probs.back());
      t = sampler_.Draw(out.probs.back());
    }
    out.tokens.push_back(t);
    seen.push_back(t);
    if (i + 1 == k) break;
    ES_ASSIGN_OR_RETURN(logits, seq_->Forward({&t, 1}));
    fed_.push_back(t);
  }
  return out;
}

namespace {

// Verifies one row's draft token `d` (drawn from `q`; null: a point mass)
// against the target's distribution `p`. Returns d when it is kept, else
// a draw from the residual max(0, p - q).
int32_t Verify(Sampler& sampler, std::vector<float>& p, const float* q,
               int32_t d, bool* kept) {
  const double pd = d >= 0 && d < static_cast<int32_t>(p.size()) ? p[d] : 0;
  const double qd = q != nullptr ? q[d] : 1.0;
  // p(d) >= q(d) keeps it for sure (and without a draw: greedy decoding
  // stays deterministic); else with probability p(d) / q(d).
  *kept = pd > 0 && (pd >= qd || sampler.Uniform() < pd / qd);
  if (*kept) return d;
  double mass = 0;
  for (size_t x = 0; x < p.size(); ++x) {
    p[x] = std::max(0.0f, p[x] - (q != nullptr ? q[x] : (x == size_t(d))));
    mass += p[x];
  }
  // p == q would have kept d; rounding alone can empty the residual.
  return mass > 0 ? sampler.Draw(p) : d;
}

}  // namespace

absl::StatusOr<GenerationResult> GenerateSpeculativeIds(
    LogitsModel& target, Drafter& drafter, absl::Span<const int32_t> prompt_ids,
    const GenerationOptions& options, const SpeculationParams& speculative,
    int32_t eos_id, const std::function<void(int32_t)>& on_token,
    SpeculativeStats* stats) {
  ES_RETURN_IF_ERROR(options.sampling.Validate());
  if (speculative.max_draft < 1 || speculative.max_draft > kMaxDraftTokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("speculative max_draft ", speculative.max_draft,
                     " is not in [1, ", kMaxDraftTokens, "]"));
  }
  ES_ASSIGN_OR_RETURN(const int64_t max_new,
                      MaxNewTokens(target, prompt_ids, options));
  SpeculativeStats local_stats;
  SpeculativeStats& st = stats != nullptr ? *stats : local_stats;
  const int64_t context_len = target.context_length();
  GenerationResult result;
  result.prompt_ids.assign(prompt_ids.begin(), prompt_ids.end());
  std::vector<int32_t> context = result.prompt_ids;
  Sampler sampler(options.sampling);
  auto t0 = std::chrono::steady_clock::now();
  ES_ASSIGN_OR_RETURN(std::vector<float> logits, target.Forward(prompt_ids));
  result.prefill_seconds = Since(t0);
  t0 = std::chrono::steady_clock::now();
  // Takes a chosen token; true when generation is over.
  auto emit = [&](int32_t t) {
    if (options.stop_at_eos && t == eos_id && eos_id >= 0) {
      result.stopped_at_eos = true;
      return true;
    }
    result.tokens.push_back(t);
    context.push_back(t);
    if (on_token) on_token(t);
    if (static_cast<int64_t>(result.tokens.size()) == max_new) {
      result.stopped_at_context = max_new < options.max_new_tokens;
      return true;
    }
    return false;
  };
  bool over = max_new <= 0 || emit(sampler.Sample(logits, context));
  int k = speculative.adaptive ? std::min(4, speculative.max_draft)
                               : speculative.max_draft;
  // Adaptive only: a running acceptance rate; while it is poor, rounds go
  // without drafts (plain decoding) for a pause that doubles each time
  // drafting fails again, so a useless draft costs a probe now and then.
  double acceptance = 1.0;
  int pause = 0, pause_length = 4;
  std::vector<float> p;
  while (!over) {
    // The target holds every context token but the last (`next`).
    const int32_t next = context.back();
    const int64_t remaining =
        max_new - static_cast<int64_t>(result.tokens.size());
    const int64_t fits = std::min<int64_t>(
        {k, remaining - 1, context_len - static_cast<int64_t>(context.size())});
    Draft draft;
    if (pause > 0) {
      --pause;
    } else if (fits > 0) {
      const auto d0 = std::chrono::steady_clock::now();
      ES_ASSIGN_OR_RETURN(draft,
                          drafter.Propose(context, static_cast<int>(fits)));
      st.draft_seconds += Since(d0);
      if (static_cast<int64_t>(draft.tokens.size()) > fits) {
        draft.tokens.resize(fits);
      }
      for (int32_t t : draft.tokens) {
        if (t < 0 || t >= static_cast<int32_t>(logits.size())) {
          return absl::InvalidArgumentError(absl::StrCat(
              drafter.Describe(), " proposed token ", t,
              ", outside the model's vocabulary of ", logits.size()));
        }
      }
      if (!draft.probs.empty() && draft.probs.size() < draft.tokens.size()) {
        return absl::InternalError(absl::StrCat(
            drafter.Describe(), " proposed ", draft.tokens.size(),
            " tokens with ", draft.probs.size(), " distributions"));
      }
    }
    ++st.rounds;
    if (draft.tokens.empty()) {
      ES_ASSIGN_OR_RETURN(logits, target.Forward({&next, 1}));
      over = emit(sampler.Sample(logits, context));
      continue;
    }
    std::vector<int32_t> rows = {next};
    rows.insert(rows.end(), draft.tokens.begin(), draft.tokens.end());
    ES_ASSIGN_OR_RETURN(at::Tensor all, target.ForwardAll(rows));
    const int64_t m = static_cast<int64_t>(draft.tokens.size());
    if (all.dim() != 2 || all.size(0) != m + 1 ||
        all.scalar_type() != at::kFloat) {
      return absl::InternalError(absl::StrCat(
          "verification returned ", all.dim(), "-d logits of ",
          all.dim() > 0 ? all.size(0) : 0, " rows for ", m + 1, " rows"));
    }
    const int64_t vocab = all.size(1);
    for (size_t i = 0; i < draft.probs.size(); ++i) {
      if (static_cast<int64_t>(draft.probs[i].size()) != vocab) {
        return absl::InternalError(absl::StrCat(
            drafter.Describe(), ": a draft distribution over ",
            draft.probs[i].size(), " tokens, the model has ", vocab));
      }
    }
    all = all.contiguous();
    const float* rows_logits = all.data_ptr<float>();
    ++st.draft_rounds;
    st.drafted += m;
    st.k.push_back(static_cast<int>(m));
    int64_t accepted = 0;
    for (int64_t i = 0; i <= m && !over; ++i) {
      const absl::Span<const float> row(rows_logits + i * vocab, vocab);
      if (i == m) {  // Every draft token kept: one more from the last row.
        over = emit(sampler.Sample(row, context));
        break;
      }
      sampler.Distribution(row, context, &p);
      bool kept = false;
      const int32_t t = Verify(
          sampler, p, draft.probs.empty() ? nullptr : draft.probs[i].data(),
          draft.tokens[i], &kept);
      over = emit(t);
      if (!kept) break;
      ++accepted;
    }
    st.accepted += accepted;
    if (over) break;
    // Rows after the last accepted draft token fed positions that the
    // target's choice replaced.
    if (accepted < m) ES_RETURN_IF_ERROR(target.Rollback(m - accepted));
    if (speculative.adaptive) {
      k = accepted == m ? std::min(k + 2, speculative.max_draft)
                        : std::max(k - 1, 1);
      acceptance = 0.7 * acceptance + 0.3 * accepted / m;
      if (acceptance < 0.25) {
        pause = pause_length;
        pause_length = std::min(pause_length * 2, 64);
        acceptance = 0.5;  // The probe after the pause decides afresh.
      } else if (accepted > 0) {
        pause_length = 4;
      }
    }
  }
  result.decode_seconds = Since(t0);
  return result;
}

}  // namespace edgesplit
