#include "device_agent/remote_sequence.h"

#include <algorithm>
#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "base/status_macros.h"
#include "proto/tensor_codec.h"
#include "runtime/threading.h"
#include "runtime/torch_util.h"

namespace edgesplit {
absl::StatusOr<std::unique_ptr<RemoteSequence>> RemoteSequence::Open(
    const ModelConfig& config, const StageModel* local, const StageModel* head,
    v1::StageService::Stub* first_hop, const RemoteSequenceOptions& options) {
  if (options.route.empty()) {
    return absl::InvalidArgumentError("route has no servers");
  }
  std::unique_ptr<RemoteSequence> s(new RemoteSequence());
  s->config_ = config;
  s->local_ = local;
  s->head_ = head;
  s->options_ = options;
  if (local != nullptr) s->local_cache_ = local->NewCache(nullptr);
  if (head != nullptr) s->head_cache_ = head->NewCache(nullptr);
  for (const v1::Hop& hop : options.route) {
    s->hop_stats_.push_back({hop.node()});
  }
  s->stream_ =
      StageStream::Start(first_hop, options.deadline, options.route[0].node(),
                         options.route[0].address());
  v1::StageRequest req =
      OpenRequest(options.session_id, options.model_id, options.codec,
                  options.route, head != nullptr);
  req.mutable_open()->set_adapter(options.adapter);
  *req.mutable_open()->mutable_grant() = options.grant;
  ES_ASSIGN_OR_RETURN(v1::StageResponse r, s->Call(std::move(req)));
  if (!r.has_opened()) {
    return absl::InternalError("first hop did not confirm the session");
  }
  return s;
}

RemoteSequence::~RemoteSequence() {
  if (!stream_) return;
  stream_->Close();
  (void)stream_->Wait();  // gRPC done with the call (see SplitTrainer).
}

int64_t RemoteSequence::context_length() const { return config_.max_positions; }

absl::StatusOr<v1::StageResponse> RemoteSequence::Call(
    v1::StageRequest request) {
  absl::Notification done;
  absl::StatusOr<v1::StageResponse> result;
  stream_->Send(std::move(request), [&](absl::StatusOr<v1::StageResponse> r) {
    result = std::move(r);
    done.Notify();
  });
  done.WaitForNotification();
  return result;
}

void RemoteSequence::Slowdown(std::chrono::steady_clock::time_point start) {
  EmulateSlowdown(start, options_.compute_slowdown);
}

absl::StatusOr<std::vector<float>> RemoteSequence::Forward(
    absl::Span<const int32_t> tokens) {
  ES_ASSIGN_OR_RETURN(at::Tensor logits, Run(tokens, /*last_only=*/true));
  if (logits.size(0) != 1) {
    return absl::InternalError("expected the last token's logits only");
  }
  at::Tensor row = logits[0].contiguous();
  const float* p = row.data_ptr<float>();
  return std::vector<float>(p, p + row.numel());
}

absl::StatusOr<at::Tensor> RemoteSequence::ForwardAll(
    absl::Span<const int32_t> tokens) {
  ES_ASSIGN_OR_RETURN(at::Tensor logits, Run(tokens, /*last_only=*/false));
  if (logits.size(0) != static_cast<int64_t>(tokens.size())) {
    return absl::InternalError(absl::StrCat("route answered ", logits.size(0),
                                            " rows of logits for ",
                                            tokens.size(), " tokens"));
  }
  return logits;
}

absl::Status RemoteSequence::Rollback(int64_t positions) {
  const int64_t held = positions_;
  if (positions < 0 || positions > held) {
    return absl::InvalidArgumentError(
        absl::StrCat("rollback of ", positions,
                     " positions, but the sequence holds ", held));
  }
  // Here at once; on the servers with the next step.
  positions_ -= positions;
  if (local_cache_) local_cache_->Truncate(positions_);
  if (head_cache_) {
    head_cache_->Truncate(head_cache_->length() -
                          std::min(positions, head_cache_->length()));
  }
  pending_rollback_ += positions;
  return absl::OkStatus();
}

absl::Status RemoteSequence::RunLocal(absl::Span<const int32_t> tokens,
                                      v1::ForwardRequest* fwd) {
  if (local_ == nullptr) {
    if (options_.privatizer != nullptr) {
      return absl::FailedPreconditionError(
          "privacy: this route gives the device no blocks, so token ids would "
          "leave it un-noised");
    }
    // Zero device blocks: the first hop embeds (and checks the ids).
    fwd->mutable_tokens()->Add(tokens.begin(), tokens.end());
    bytes_sent_ += static_cast<int64_t>(tokens.size() * sizeof(int32_t));
    return absl::OkStatus();
  }
  StageInput in;
  in.sequences = {{local_cache_.get(), static_cast<int64_t>(tokens.size())}};
  if (options_.local_adapter != nullptr) {
    in.sequence_adapters = {options_.local_adapter};
  }
  ES_RETURN_IF_ERROR(TorchCall("device stage", [&]() -> absl::Status {
    in.tokens = at::tensor(std::vector<int64_t>(tokens.begin(), tokens.end()),
                           at::kLong);
    return absl::OkStatus();
  }));
  ES_ASSIGN_OR_RETURN(at::Tensor hidden, local_->Forward(in));
  if (options_.privatizer != nullptr) {
    // A private copy: the noise must reach the wire, never the local state.
    ES_RETURN_IF_ERROR(TorchCall("privacy", [&]() -> absl::Status {
      if (hidden.dim() != 2 ||
          hidden.size(0) != static_cast<int64_t>(tokens.size()) ||
          hidden.size(1) != config_.hidden_size) {
        return absl::InternalError(
            "device stage output is not [tokens, hidden]");
      }
      hidden = hidden.to(at::kFloat).contiguous().clone();
      return absl::OkStatus();
    }));
    ES_RETURN_IF_ERROR(options_.privatizer->Privatize(
        positions_, tokens, hidden.data_ptr<float>()));
  }
  ES_RETURN_IF_ERROR(
      wire::Encode(hidden, options_.codec, fwd->mutable_hidden()));
  bytes_sent_ += fwd->hidden().data().size() + fwd->hidden().scales().size();
  return absl::OkStatus();
}

absl::StatusOr<CheckedDraft> RemoteSequence::ForwardChecked(
    absl::Span<const int32_t> tokens, const DraftCheck& check) {
  if (head_ != nullptr) return LogitsModel::ForwardChecked(tokens, check);
  const int64_t k = static_cast<int64_t>(tokens.size()) - 1;
  ES_RETURN_IF_ERROR(check.Validate(k));
  CheckedDraft out;
  ES_ASSIGN_OR_RETURN(at::Tensor row,
                      Run(tokens, /*last_only=*/false, &check, &out.accepted));
  if (row.size(0) != 1 || out.accepted < 0 || out.accepted > k) {
    return absl::InternalError(absl::StrCat(
        "route kept ", out.accepted, " of ", k, " drafts and answered ",
        row.size(0), " rows of logits (one expected)"));
  }
  row = row.contiguous();
  const float* p = row.data_ptr<float>();
  out.logits.assign(p, p + row.numel());
  return out;
}

absl::StatusOr<at::Tensor> RemoteSequence::Run(absl::Span<const int32_t> tokens,
                                               bool last_only,
                                               const DraftCheck* check,
                                               int64_t* accepted) {
  using Clock = std::chrono::steady_clock;
  auto t0 = Clock::now();
  const int64_t before = positions_;
  v1::StageRequest req;
  v1::ForwardRequest* fwd = req.mutable_forward();
  fwd->set_step(step_);
  fwd->set_last_token_only(last_only);
  fwd->set_rollback(static_cast<uint32_t>(pending_rollback_));
  const bool argmax_only =
      options_.argmax_only && head_ == nullptr && check == nullptr;
  fwd->set_argmax_only(argmax_only);
  if (check != nullptr) {
    v1::DraftCheck* dc = fwd->mutable_draft_check();
    dc->set_temperature(check->params.temperature);
    dc->set_top_k(check->params.top_k);
    dc->set_top_p(check->params.top_p);
    dc->mutable_draft_probs()->Add(check->draft_probs.begin(),
                                   check->draft_probs.end());
    dc->mutable_uniforms()->Add(check->uniforms.begin(), check->uniforms.end());
    dc->mutable_draft_tokens()->Add(tokens.begin() + 1, tokens.end());
  }
  if (absl::Status s = RunLocal(tokens, fwd); !s.ok()) {
    // The forward may have advanced the local cache before encoding failed.
    if (local_cache_) local_cache_->Truncate(before);
    return s;
  }
  Slowdown(t0);
  local_ms_ +=
      std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  auto response = Call(std::move(req));
  if (!response.ok()) {
    // The servers did not advance: keep the local cache in step with them.
    if (local_cache_) local_cache_->Truncate(before);
    return response.status();
  }
  ++step_;
  pending_rollback_ = 0;
  positions_ = before + static_cast<int64_t>(tokens.size());
  if (!response->has_forward()) {
    return absl::InternalError("route sent no forward result");
  }
  const v1::ForwardResult& result = response->forward();
  bytes_received_ += static_cast<int64_t>(result.ByteSizeLong());
  for (int i = 0;
       i < result.timings_size() && i < static_cast<int>(hop_stats_.size());
       ++i) {
    hop_stats_[i].compute_ms += result.timings(i).compute_ms();
    hop_stats_[i].total_ms += result.timings(i).total_ms();
  }
  const ModelConfig& c = config_;
  if (accepted != nullptr) *accepted = result.accepted();
  at::Tensor logits;
  if (argmax_only) {
    const int64_t rows = last_only ? 1 : static_cast<int64_t>(tokens.size());
    if (result.tokens_size() != rows) {
      return absl::InternalError(
          absl::StrCat("route answered ", result.tokens_size(),
                       " token ids for ", rows, " rows"));
    }
    return TorchCall("one-hot answer", [&]() -> absl::StatusOr<at::Tensor> {
      at::Tensor one_hot = at::zeros({rows, c.vocab_size}, at::kFloat);
      float* p = one_hot.data_ptr<float>();  // Contiguous, fresh.
      for (int64_t r = 0; r < rows; ++r) {
        const int32_t id = result.tokens(static_cast<int>(r));
        if (id < 0 || id >= c.vocab_size) {
          return absl::InternalError(absl::StrCat("route answered token id ",
                                                  id, " (vocabulary ",
                                                  c.vocab_size, ")"));
        }
        p[r * c.vocab_size + id] = 1.0f;
      }
      return one_hot;
    });
  }
  if (head_ != nullptr) {
    ES_ASSIGN_OR_RETURN(
        at::Tensor h,
        wire::Decode(result.output(), c.hidden_size, "forward result"));
    StageInput hin;
    hin.sequences = {{head_cache_.get(), h.size(0)}};
    hin.hidden = h;
    hin.last_token_only = last_only;
    const auto h0 = Clock::now();
    ES_ASSIGN_OR_RETURN(logits, head_->Forward(hin));
    Slowdown(h0);
  } else {
    ES_ASSIGN_OR_RETURN(
        logits, wire::Decode(result.output(), c.vocab_size, "forward result"));
  }
  return logits;
}

}  // namespace edgesplit
