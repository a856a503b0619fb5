#include "edge_server/inference_session.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "edge_server/batcher.h"
#include "runtime/draft_check.h"
#include "runtime/torch_util.h"

namespace edgesplit {
namespace {

// Each row's highest logit's index, ties to the lowest (as greedy
// sampling on the device picks).
void ArgmaxRows(const at::Tensor& logits, v1::ForwardResult* result) {
  const at::Tensor l = logits.to(at::kFloat).contiguous();
  const int64_t rows = l.size(0), vocab = l.size(1);
  const float* p = l.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = p + r * vocab;
    result->add_tokens(
        static_cast<int32_t>(std::max_element(row, row + vocab) - row));
  }
}

// The step's rows: token ids on a stage that embeds (the device holds
// zero blocks), hidden states elsewhere.
absl::StatusOr<at::Tensor> DecodeInput(const v1::ForwardRequest& forward,
                                       const StageModel& model,
                                       const wire::TensorLimits& limits) {
  if (!model.spec().embedding) {
    if (forward.tokens_size() > 0) {
      return absl::InvalidArgumentError(
          "forward.tokens: this hop does not embed (its stage starts after "
          "block 0); send hidden states");
    }
    return wire::Decode(forward.hidden(), model.config().hidden_size,
                        "forward.hidden", limits);
  }
  if (forward.has_hidden()) {
    return absl::InvalidArgumentError(
        "forward.hidden: this hop embeds (the device holds zero blocks); "
        "send token ids in forward.tokens");
  }
  const int64_t n = forward.tokens_size();
  if (n == 0 || n > limits.max_rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        "forward.tokens: ", n, " ids (1 to ", limits.max_rows, " per step)"));
  }
  const int64_t vocab = model.config().vocab_size;
  std::vector<int64_t> ids(forward.tokens().begin(), forward.tokens().end());
  for (int64_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      return absl::InvalidArgumentError(
          absl::StrCat("forward.tokens[", i, "]: id ", ids[i],
                       " outside the vocabulary of ", vocab));
    }
  }
  return TorchCall("forward.tokens", [&]() -> absl::StatusOr<at::Tensor> {
    return at::tensor(ids, at::kLong);
  });
}

// A step's draft check off the wire, validated for its rows: the token
// before the drafts and then one row per draft.
absl::StatusOr<DraftCheck> ReadDraftCheck(const v1::ForwardRequest& forward,
                                          int64_t rows, int64_t vocab) {
  const v1::DraftCheck& dc = forward.draft_check();
  if (forward.argmax_only() || forward.last_token_only()) {
    return absl::InvalidArgumentError(
        "forward.draft_check: every row's logits are checked; not with "
        "argmax_only or last_token_only");
  }
  if (rows - 1 > kMaxDraftTokens) {
    // Checked first: each checked row costs a pass over the vocabulary on
    // the stage's batcher thread.
    return absl::InvalidArgumentError(
        absl::StrCat("forward.draft_check: a step of ", rows, " rows checks ",
                     rows - 1, " drafts (at most ", kMaxDraftTokens, ")"));
  }
  if (dc.draft_tokens_size() != rows - 1 || dc.draft_probs_size() != rows - 1 ||
      dc.uniforms_size() != rows - 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "forward.draft_check: ", dc.draft_tokens_size(), " draft_tokens, ",
        dc.draft_probs_size(), " draft_probs and ", dc.uniforms_size(),
        " uniforms for a step of ", rows,
        " rows (one each per row after "
        "the first)"));
  }
  for (int i = 0; i < dc.draft_tokens_size(); ++i) {
    if (dc.draft_tokens(i) < 0 || dc.draft_tokens(i) >= vocab) {
      return absl::InvalidArgumentError(absl::StrCat(
          "forward.draft_check.draft_tokens[", i, "]: id ", dc.draft_tokens(i),
          " outside the vocabulary of ", vocab));
    }
  }
  DraftCheck check;
  check.params.temperature = dc.temperature();
  check.params.top_k = dc.top_k();
  check.params.top_p = dc.top_p();
  check.draft_probs.assign(dc.draft_probs().begin(), dc.draft_probs().end());
  check.uniforms.assign(dc.uniforms().begin(), dc.uniforms().end());
  if (absl::Status s = check.Validate(rows - 1); !s.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("forward.draft_check: ", s.message()));
  }
  return check;
}

// The head hop's answer to a checked step: how many drafts it keeps and
// the logits of the row after them.
absl::Status AnswerChecked(const at::Tensor& logits,
                           const v1::ForwardRequest& request,
                           const DraftCheck& check, v1::ForwardResult* result) {
  return TorchCall("draft check", [&]() -> absl::Status {
    const at::Tensor l = logits.to(at::kFloat).contiguous();
    const auto& drafts = request.draft_check().draft_tokens();
    if (l.size(0) != drafts.size() + 1) {
      return absl::InternalError(absl::StrCat("draft check: ", l.size(0),
                                              " rows of logits for ",
                                              drafts.size(), " drafts"));
    }
    const int64_t kept =
        AcceptDraft(l.data_ptr<float>(), l.size(1),
                    absl::MakeConstSpan(drafts.data(), drafts.size()), check);
    result->set_accepted(static_cast<uint32_t>(kept));
    return wire::Encode(l.narrow(0, kept, 1), v1::CODEC_FP32,
                        result->mutable_output());
  });
}

}  // namespace

InferenceSession::InferenceSession(const SessionEnv& env,
                                   SessionTransport* transport,
                                   absl::Time deadline, OpenedHop hop)
    : ServerSession(env, transport, deadline, std::move(hop)) {
  absl::MutexLock lock(&mu_);
  cache_ = hop_.stage->model->NewCache(env_.host->kv_budget());
}

void InferenceSession::OnRequest(const v1::StageRequest& request) {
  switch (request.kind_case()) {
    case v1::StageRequest::kForward:
      return Forward(request.forward());
    case v1::StageRequest::kBackward:
    case v1::StageRequest::kOptimizerStep:
    case v1::StageRequest::kRestore:
    case v1::StageRequest::kExport:
      return End(absl::FailedPreconditionError(
          "training requests need a session opened with a training spec"));
    default:
      return End(absl::InvalidArgumentError("empty StageRequest"));
  }
}

void InferenceSession::Forward(const v1::ForwardRequest& forward) {
  absl::Status order;
  {
    absl::MutexLock lock(&mu_);
    if (forward.step() != next_step_) {
      order = absl::InvalidArgumentError(
          absl::StrCat("forward step ", forward.step(),
                       " out of order (expected ", next_step_, ")"));
    } else {
      ++next_step_;
    }
  }
  if (!order.ok()) return End(order);
  const HostedStage& stage = *hop_.stage;
  // Re-planned away: the stage still runs for this session, but the plan
  // moved it. Failing at this token boundary (NOT_FOUND, which devices
  // answer by taking the new route and replaying their tokens) moves the
  // session to the better plan instead of finishing on the old one.
  if (stage.retired.load()) {
    const BlockRange blocks = stage.model->spec().blocks;
    return End(absl::NotFoundError(absl::StrCat(
        "re-planned: node ", node_, " no longer serves model ", stage.model_id,
        " blocks [", blocks.first, ", ", blocks.last, ") this way")));
  }
  Pending p;
  p.received = std::chrono::steady_clock::now();
  auto input = DecodeInput(forward, *stage.model, env_.limits);
  if (!input.ok()) return End(input.status());
  if (forward.argmax_only() && hop_.role == HopRole::kLastHidden) {
    return End(absl::InvalidArgumentError(
        "forward.argmax_only: this route ends with hidden states (U-shaped), "
        "not logits"));
  }
  if (forward.has_draft_check()) {
    // Checked before computing: the check needs the head's logits.
    if (hop_.role == HopRole::kLastHidden) {
      return End(absl::InvalidArgumentError(
          "forward.draft_check: this route ends with hidden states "
          "(U-shaped); the device checks its drafts"));
    }
    auto check = ReadDraftCheck(forward, input->size(0),
                                stage.model->config().vocab_size);
    if (!check.ok()) return End(check.status());
    p.check = *std::move(check);
  }
  if (env_.pending_inputs != nullptr) {
    auto charge = env_.pending_inputs->Take(input->nbytes());
    if (!charge.ok()) return End(charge.status());
    p.charge = std::make_shared<UsageBudget::Charge>(*std::move(charge));
  }
  p.request = forward;
  p.request.clear_hidden();  // Decoded; don't keep the bytes twice.
  p.request.clear_tokens();
  p.input = *std::move(input);
  absl::Status refused;
  {
    absl::MutexLock lock(&mu_);
    const int64_t rollback = forward.rollback();
    if (rollback > positions_) {
      refused = absl::InvalidArgumentError(absl::StrCat(
          "forward step ", forward.step(), ": rollback of ", rollback,
          " positions, but the session holds ", positions_));
    } else if (queue_.size() >= kMaxPendingRequests) {
      refused = absl::ResourceExhaustedError(
          absl::StrCat("more than ", kMaxPendingRequests,
                       " forward requests pending on this session"));
    } else {
      positions_ += p.input.size(0) - rollback;
      queue_.push_back(std::move(p));
      SubmitLocked();
      return;
    }
  }
  End(refused);
}

void InferenceSession::SubmitLocked() {
  if (computing_ || queue_.empty() || OverLocked()) return;
  computing_ = true;
  Pending p = std::move(queue_.front());
  queue_.pop_front();
  // Nothing computes on this cache now; positions_ kept the rollback
  // within what the earlier steps left in it.
  if (const int64_t n = p.request.rollback(); n > 0) {
    cache_->Truncate(cache_->length() - std::min(n, cache_->length()));
  }
  BatchItem item;
  item.cache = cache_.get();
  item.input = p.input;
  item.last_token_only = p.request.last_token_only();
  item.adapter = hop_.lora;
  const auto started = std::chrono::steady_clock::now();
  // The callback owns a reference: the cache outlives the batch item.
  auto self = std::static_pointer_cast<InferenceSession>(shared_from_this());
  item.done = [self, p = std::move(p),
               started](absl::StatusOr<at::Tensor> out) mutable {
    self->OnComputed(std::move(p), std::move(out), started);
  };
  hop_.stage->batcher->Submit(std::move(item));
}

void InferenceSession::OnComputed(
    Pending p, absl::StatusOr<at::Tensor> out,
    std::chrono::steady_clock::time_point started) {
  {
    absl::MutexLock lock(&mu_);
    computing_ = false;
    if (OverLocked()) {
      // The session ended while this step ran: free its memory now.
      cache_.reset();
      return;
    }
    if (hop_.role == HopRole::kMiddle && out.ok()) ++next_pending_;
    if (out.ok()) SubmitLocked();  // This session's next step may start.
  }
  if (!out.ok()) return End(out.status());
  v1::HopTiming timing;
  timing.set_node(node_);
  timing.set_compute_ms(MillisSince(started));
  if (hop_.role == HopRole::kMiddle) {
    return PassOn(p, *out, std::move(timing));
  }
  Answer(p, *std::move(out), std::move(timing));
}

void InferenceSession::Answer(const Pending& p, at::Tensor out,
                              v1::HopTiming timing) {
  const bool hidden = hop_.role == HopRole::kLastHidden;
  if (hidden && p.request.last_token_only() && out.size(0) > 1) {
    // U-shaped: the device's head needs only the last token's state.
    out = out.narrow(0, out.size(0) - 1, 1);
  }
  v1::StageResponse response;
  v1::ForwardResult* result = response.mutable_forward();
  result->set_step(p.request.step());
  if (p.request.argmax_only()) {  // Not U-shaped: refused at receipt.
    ArgmaxRows(out, result);
  } else if (p.check.has_value()) {
    absl::Status s = AnswerChecked(out, p.request, *p.check, result);
    if (!s.ok()) return End(s);
  } else {
    // Logits travel as fp32 (a lossy codec could change the sampled
    // token); hidden states of a U-shaped split use the session's codec.
    absl::Status s = wire::Encode(out, hidden ? hop_.codec : v1::CODEC_FP32,
                                  result->mutable_output());
    if (!s.ok()) return End(s);
  }
  timing.set_total_ms(MillisSince(p.received));
  if (env_.metrics != nullptr) {
    env_.metrics->step_seconds->Observe(timing.total_ms() / 1000);
  }
  *result->add_timings() = std::move(timing);
  Respond(response);
  MaybeFinishIdle();
}

void InferenceSession::PassOn(const Pending& p, const at::Tensor& out,
                              v1::HopTiming timing) {
  const uint64_t step = p.request.step();
  v1::StageRequest req;
  v1::ForwardRequest* fwd = req.mutable_forward();
  fwd->set_step(step);
  fwd->set_last_token_only(p.request.last_token_only());
  fwd->set_rollback(p.request.rollback());
  fwd->set_argmax_only(p.request.argmax_only());
  if (p.request.has_draft_check()) {
    *fwd->mutable_draft_check() = p.request.draft_check();
  }
  absl::Status s = wire::Encode(out, hop_.codec, fwd->mutable_hidden());
  if (!s.ok()) return End(s);
  std::weak_ptr<InferenceSession> weak =
      std::static_pointer_cast<InferenceSession>(shared_from_this());
  const auto received = p.received;
  ToNext(std::move(req), [weak, timing = std::move(timing), received,
                          step](v1::StageResponse r) mutable {
    auto self = weak.lock();
    if (!self) return;
    {
      absl::MutexLock lock(&self->mu_);
      --self->next_pending_;
    }
    if (!r.has_forward() || r.forward().step() != step) {
      return self->End(absl::InternalError(absl::StrCat(
          "next hop answered step ", r.has_forward() ? r.forward().step() : 0,
          " for step ", step)));
    }
    timing.set_total_ms(MillisSince(received));
    if (self->env_.metrics != nullptr) {
      self->env_.metrics->step_seconds->Observe(timing.total_ms() / 1000);
    }
    PrependTiming(std::move(timing), r.mutable_forward());
    self->Respond(r);
    self->MaybeFinishIdle();
  });
}

bool InferenceSession::IdleLocked() const {
  return !computing_ && queue_.empty() && next_pending_ == 0;
}

void InferenceSession::OnEndLocked() {
  queue_.clear();
  // No batch holds the cache: free it now, not when the stream's last
  // reference goes (else OnComputed frees it when the step returns).
  if (!computing_) cache_.reset();
}

}  // namespace edgesplit
