#include "runtime/speculative.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "runtime/draft_check.h"
#include "runtime/draft_length.h"
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

// softmax(logits)[t] at temperature 1.
float Softmax1(const std::vector<float>& logits, int32_t t) {
  const float top = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float l : logits) sum += std::exp(static_cast<double>(l - top));
  return static_cast<float>(std::exp(static_cast<double>(logits[t] - top)) /
                            sum);
}

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
    out.confidence.push_back(Softmax1(logits, t));
    seen.push_back(t);
    if (i + 1 == k) break;
    ES_ASSIGN_OR_RETURN(logits, seq_->Forward({&t, 1}));
    fed_.push_back(t);
  }
  return out;
}

namespace {

// A draw from the residual max(0, p - q) after draft token `d` (drawn
// from `q`; null: a point mass) was rejected; `p` is overwritten.
int32_t Residual(Sampler& sampler, std::vector<float>& p, const float* q,
                 int32_t d) {
  double mass = 0;
  for (size_t x = 0; x < p.size(); ++x) {
    p[x] = std::max(0.0f, p[x] - (q != nullptr ? q[x] : (x == size_t(d))));
    mass += p[x];
  }
  // p == q would have kept d; rounding alone can empty the residual.
  return mass > 0 ? sampler.Draw(p) : d;
}

// The draft, checked: at most `fits` tokens, inside the vocabulary, with a
// distribution per token when it has any.
absl::StatusOr<Draft> ProposeChecked(Drafter& drafter,
                                     absl::Span<const int32_t> context,
                                     int64_t fits, int64_t vocab) {
  ES_ASSIGN_OR_RETURN(Draft draft,
                      drafter.Propose(context, static_cast<int>(fits)));
  if (static_cast<int64_t>(draft.tokens.size()) > fits) {
    draft.tokens.resize(fits);
  }
  for (int32_t t : draft.tokens) {
    if (t < 0 || t >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat(drafter.Describe(), " proposed token ", t,
                       ", outside the model's vocabulary of ", vocab));
    }
  }
  if (!draft.probs.empty() && draft.probs.size() < draft.tokens.size()) {
    return absl::InternalError(
        absl::StrCat(drafter.Describe(), " proposed ", draft.tokens.size(),
                     " tokens with ", draft.probs.size(), " distributions"));
  }
  for (size_t i = 0; i < draft.tokens.size() && i < draft.probs.size(); ++i) {
    if (static_cast<int64_t>(draft.probs[i].size()) != vocab) {
      return absl::InternalError(absl::StrCat(
          drafter.Describe(), ": a draft distribution over ",
          draft.probs[i].size(), " tokens, the model has ", vocab));
    }
  }
  return draft;
}

// One speculative generation's state: the loop of GenerateSpeculativeIds.
class SpeculativeRun {
 public:
  SpeculativeRun(LogitsModel& target, const GenerationOptions& options,
                 int32_t eos_id, int64_t max_new, const TokenCallback& on_token,
                 GenerationResult& result)
      : target_(target),
        options_(options),
        eos_id_(eos_id),
        max_new_(max_new),
        on_token_(on_token),
        result_(result),
        sampler_(options.sampling),
        context_(result.prompt_ids) {}

  Sampler& sampler() { return sampler_; }
  const std::vector<int32_t>& context() const { return context_; }
  int64_t remaining() const {
    return max_new_ - static_cast<int64_t>(result_.tokens.size());
  }

  // Takes a chosen token; true when generation is over.
  bool Emit(int32_t t) {
    if (IsEos(options_, eos_id_, t)) {
      result_.stopped_at_eos = true;
      return true;
    }
    result_.tokens.push_back(t);
    context_.push_back(t);
    if (on_token_ && !on_token_(t)) {
      result_.stopped_by_caller = true;
      return true;
    }
    if (static_cast<int64_t>(result_.tokens.size()) == max_new_) {
      result_.stopped_at_context = max_new_ < options_.max_new_tokens;
      return true;
    }
    return false;
  }

  // Feeds `rows` (the tokens emitted but not yet fed, then the drafts)
  // and emits the kept drafts and one token of the target's. Returns how
  // many were kept. `unverified[j]`: the draft probability of rows[j] when
  // it was emitted unverified (uncertainty skip), else < 0.
  absl::StatusOr<int64_t> Verify(const std::vector<int32_t>& rows,
                                 const std::vector<float>& unverified,
                                 const Draft& draft, int64_t vocab,
                                 bool* over) {
    const int64_t m = static_cast<int64_t>(draft.tokens.size());
    const int64_t at = static_cast<int64_t>(unverified.size()) - 1;
    // Sampling draws each draft token's uniform up front, wherever the
    // check runs, so a seeded run's tokens never depend on that.
    std::vector<double> u(m, 0.0);
    if (options_.sampling.temperature > 0) {
      for (double& x : u) x = sampler_.Uniform();
    }
    if (at == 0 && options_.sampling.temperature > 0 &&
        options_.sampling.repetition_penalty == 1.0f) {
      return VerifyChecked(rows, draft, vocab, u, over);
    }
    ES_ASSIGN_OR_RETURN(at::Tensor all, AllRows(rows, vocab));
    const float* logits = all.data_ptr<float>();
    Agreement(logits, vocab, rows, unverified);
    logits += at * vocab;
    int64_t accepted = 0;
    for (int64_t i = 0; i <= m && !*over; ++i) {
      const absl::Span<const float> row(logits + i * vocab, vocab);
      if (i == m) {  // Every draft token kept: one more from the last row.
        *over = Emit(sampler_.Sample(row, context_));
        break;
      }
      sampler_.Distribution(row, context_, &p_);
      const int32_t d = draft.tokens[i];
      const double pd = p_[d];
      const float* q = QRow(draft, i);
      const double qd = q != nullptr ? q[d] : 1.0;
      // Greedy never needs u: p(d) is 0 or 1.
      const bool kept = KeepDraft(pd, qd, u[i]);
      *over = Emit(kept ? d : Residual(sampler_, p_, q, d));
      if (!kept) break;
      ++accepted;
    }
    return accepted;
  }

  // A round without drafts after unverified tokens: feeds them all and
  // emits the target's next token.
  absl::Status Feed(const std::vector<int32_t>& rows,
                    const std::vector<float>& unverified, int64_t vocab,
                    bool* over) {
    ES_ASSIGN_OR_RETURN(at::Tensor all, AllRows(rows, vocab));
    const float* logits = all.data_ptr<float>();
    Agreement(logits, vocab, rows, unverified);
    const int64_t last = static_cast<int64_t>(rows.size()) - 1;
    *over = Emit(sampler_.Sample(
        {logits + last * vocab, static_cast<size_t>(vocab)}, context_));
    return absl::OkStatus();
  }

  int64_t skipped_checked() const { return skipped_checked_; }
  double skipped_agreement() const { return skipped_agreement_; }

 private:
  absl::StatusOr<at::Tensor> AllRows(const std::vector<int32_t>& rows,
                                     int64_t vocab) {
    ES_ASSIGN_OR_RETURN(at::Tensor all, target_.ForwardAll(rows));
    const int64_t n = static_cast<int64_t>(rows.size());
    if (all.dim() != 2 || all.size(0) != n || all.size(1) != vocab ||
        all.scalar_type() != at::kFloat) {
      return absl::InternalError(absl::StrCat(
          "verification returned ", all.dim(), "-d logits of ",
          all.dim() > 0 ? all.size(0) : 0, " rows for ", n, " rows"));
    }
    return all.contiguous();
  }

  // Uncertainty skip's quality: for each token emitted unverified, the
  // chance verification would have kept it, min(1, p(d) / q(d)) (greedy:
  // 1 when it is the target's choice, else 0).
  void Agreement(const float* logits, int64_t vocab,
                 const std::vector<int32_t>& rows,
                 const std::vector<float>& unverified) {
    // context_ ends with rows[0 .. unverified.size()); row j - 1 saw the
    // context up to rows[j - 1] (what a repetition penalty looks at).
    const size_t ahead = unverified.size();
    for (size_t j = 1; j < ahead; ++j) {
      if (unverified[j] < 0) continue;
      const absl::Span<const int32_t> seen(context_.data(),
                                           context_.size() - (ahead - j));
      sampler_.Distribution(
          {logits + (j - 1) * vocab, static_cast<size_t>(vocab)}, seen, &p_);
      skipped_agreement_ += std::min(1.0, double{p_[rows[j]]} / unverified[j]);
      ++skipped_checked_;
    }
  }

  static const float* QRow(const Draft& draft, int64_t i) {
    return draft.probs.empty() ? nullptr : draft.probs[i].data();
  }

  // Sampling without a penalty: the target checks where its logits are (a
  // split route: on its last server) and answers one row.
  absl::StatusOr<int64_t> VerifyChecked(const std::vector<int32_t>& rows,
                                        const Draft& draft, int64_t vocab,
                                        const std::vector<double>& u,
                                        bool* over) {
    const int64_t m = static_cast<int64_t>(rows.size()) - 1;
    DraftCheck check;
    check.params = options_.sampling;
    check.uniforms = u;
    for (int64_t i = 0; i < m; ++i) {
      const float* q = QRow(draft, i);
      check.draft_probs.push_back(q != nullptr ? q[draft.tokens[i]] : 1.0f);
    }
    ES_ASSIGN_OR_RETURN(CheckedDraft c, target_.ForwardChecked(rows, check));
    if (c.accepted < 0 || c.accepted > m ||
        static_cast<int64_t>(c.logits.size()) != vocab) {
      return absl::InternalError(
          absl::StrCat("checked verification kept ", c.accepted, " of ", m,
                       " drafts and answered ", c.logits.size(), " logits"));
    }
    for (int64_t i = 0; i < c.accepted && !*over; ++i) {
      *over = Emit(draft.tokens[i]);
    }
    if (*over) return c.accepted;
    if (c.accepted == m) {
      *over = Emit(sampler_.Sample(c.logits, context_));
    } else {
      sampler_.Distribution(c.logits, context_, &p_);
      *over = Emit(Residual(sampler_, p_, QRow(draft, c.accepted),
                            draft.tokens[c.accepted]));
    }
    return c.accepted;
  }

  LogitsModel& target_;
  const GenerationOptions& options_;
  const int32_t eos_id_;
  const int64_t max_new_;
  const TokenCallback& on_token_;
  GenerationResult& result_;
  Sampler sampler_;
  std::vector<int32_t> context_;
  std::vector<float> p_;
  int64_t skipped_checked_ = 0;
  double skipped_agreement_ = 0;
};

// Uncertainty skip (off when `threshold` is 0): emits the draft's leading
// tokens whose draft probability reaches `threshold` at once, unverified,
// and leaves the rest in `draft`. Returns how many it emitted.
absl::StatusOr<int64_t> SkipConfident(float threshold, Draft* draft,
                                      SpeculativeRun* run,
                                      std::vector<int32_t>* pending,
                                      std::vector<float>* unverified,
                                      bool* over) {
  if (threshold <= 0 || draft->tokens.empty()) return 0;
  const int64_t m = static_cast<int64_t>(draft->tokens.size());
  if (static_cast<int64_t>(draft->confidence.size()) < m) {
    return absl::InvalidArgumentError(
        "the uncertainty skip needs a draft model's probabilities (prompt "
        "lookup has none)");
  }
  int64_t n = 0;
  while (n < m && !*over && draft->confidence[n] >= threshold) {
    const int32_t d = draft->tokens[n];
    pending->push_back(d);
    // The chance verification would keep d is min(1, p(d) / q(d)), q the
    // distribution d was drawn from (a point mass when greedy).
    unverified->push_back(draft->probs.empty() ? 1.0f : draft->probs[n][d]);
    *over = run->Emit(d);
    ++n;
  }
  draft->tokens.erase(draft->tokens.begin(), draft->tokens.begin() + n);
  if (!draft->probs.empty()) {
    draft->probs.erase(draft->probs.begin(), draft->probs.begin() + n);
  }
  draft->confidence.erase(draft->confidence.begin(),
                          draft->confidence.begin() + n);
  return n;
}

}  // namespace

absl::StatusOr<GenerationResult> GenerateSpeculativeIds(
    LogitsModel& target, Drafter& drafter, absl::Span<const int32_t> prompt_ids,
    const GenerationOptions& options, const SpeculationParams& speculative,
    int32_t eos_id, const TokenCallback& on_token, SpeculativeStats* stats) {
  ES_RETURN_IF_ERROR(options.sampling.Validate());
  if (speculative.max_draft < 1 || speculative.max_draft > kMaxDraftTokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("speculative max_draft ", speculative.max_draft,
                     " is not in [1, ", kMaxDraftTokens, "]"));
  }
  if (!(speculative.skip_threshold >= 0 && speculative.skip_threshold <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("speculative skip_threshold ", speculative.skip_threshold,
                     " is not in [0, 1]"));
  }
  ES_ASSIGN_OR_RETURN(const int64_t max_new,
                      MaxNewTokens(target, prompt_ids, options));
  SpeculativeStats local_stats;
  SpeculativeStats& st = stats != nullptr ? *stats : local_stats;
  const int64_t context_len = target.context_length();
  GenerationResult result;
  result.prompt_ids.assign(prompt_ids.begin(), prompt_ids.end());
  SpeculativeRun run(target, options, eos_id, max_new, on_token, result);
  auto t0 = std::chrono::steady_clock::now();
  ES_ASSIGN_OR_RETURN(std::vector<float> logits, target.Forward(prompt_ids));
  result.prefill_seconds = Since(t0);
  t0 = std::chrono::steady_clock::now();
  const int64_t vocab = static_cast<int64_t>(logits.size());
  bool over =
      max_new <= 0 || run.Emit(run.sampler().Sample(logits, run.context()));
  DraftLengthPolicy policy(speculative.max_draft);
  // Tokens emitted but not yet fed to the target: the last one, and those
  // the uncertainty skip emitted unverified (with their draft probability;
  // -1 for the others).
  std::vector<int32_t> pending = {run.context().back()};
  std::vector<float> unverified = {-1.0f};
  while (!over) {
    const int k = speculative.adaptive ? policy.Next() : speculative.max_draft;
    const int64_t fits = std::min<int64_t>(
        {k, run.remaining() - 1,
         context_len - static_cast<int64_t>(run.context().size())});
    Draft draft;
    double draft_seconds = 0;
    if (fits > 0) {
      const auto d0 = std::chrono::steady_clock::now();
      ES_ASSIGN_OR_RETURN(draft,
                          ProposeChecked(drafter, run.context(), fits, vocab));
      draft_seconds = Since(d0);
      st.draft_seconds += draft_seconds;
    }
    ES_ASSIGN_OR_RETURN(const int64_t skipped,
                        SkipConfident(speculative.skip_threshold, &draft, &run,
                                      &pending, &unverified, &over));
    st.skipped += skipped;
    if (over) break;
    // Drafts all confident: draft on without a round trip (up to a bound
    // on what waits to be fed).
    if (skipped > 0 && draft.tokens.empty() &&
        static_cast<int64_t>(pending.size()) < kMaxDraftTokens) {
      continue;
    }
    ++st.rounds;
    const auto v0 = std::chrono::steady_clock::now();
    if (draft.tokens.empty()) {
      if (pending.size() > 1) {
        ES_RETURN_IF_ERROR(run.Feed(pending, unverified, vocab, &over));
      } else {
        ES_ASSIGN_OR_RETURN(logits, target.Forward(pending));
        policy.OnPlain(Since(v0));
        over = run.Emit(run.sampler().Sample(logits, run.context()));
      }
    } else {
      std::vector<int32_t> rows = pending;
      rows.insert(rows.end(), draft.tokens.begin(), draft.tokens.end());
      const int64_t m = static_cast<int64_t>(draft.tokens.size());
      ++st.draft_rounds;
      st.drafted += m;
      st.k.push_back(static_cast<int>(m));
      ES_ASSIGN_OR_RETURN(const int64_t accepted,
                          run.Verify(rows, unverified, draft, vocab, &over));
      st.accepted += accepted;
      if (pending.size() == 1) {
        policy.OnDraft(static_cast<int>(m), static_cast<int>(accepted),
                       draft_seconds, Since(v0));
      }
      // Rows after the last accepted draft token fed positions that the
      // target's choice replaced.
      if (!over && accepted < m) {
        ES_RETURN_IF_ERROR(target.Rollback(m - accepted));
      }
    }
    pending = {run.context().back()};
    unverified = {-1.0f};
  }
  st.skipped_checked = run.skipped_checked();
  st.skipped_agreement = run.skipped_agreement();
  result.decode_seconds = Since(t0);
  return result;
}

}  // namespace edgesplit
