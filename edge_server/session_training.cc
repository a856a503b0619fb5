// SessionHandler for training sessions: forward micro-batches keeping what
// backward needs, backward requests that travel to the last hop and come
// back as each hop's input gradient, optimizer steps with the global
// gradient norm summed along the chain, restores and exports. A hop works
// on whatever its job's thread has next, so while the last hop runs
// micro-batch i the one before it already runs i + 1 (the device issues
// requests in 1F1B order).
#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "edge_server/session_handler.h"
#include "runtime/torch_util.h"

namespace edgesplit {
namespace {

// A device keeps at most a step's micro-batches in flight (forward and
// backward each); more is a client that does not read its answers.
constexpr uint64_t kMaxTrainingRequests = 256;
// Micro-batch shares of a step's loss are at most 1; allow headroom.
constexpr double kMaxLossScale = 1e3;

double MillisSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now() - t)
      .count();
}

}  // namespace

void SessionHandler::OnTrainingRequest(const v1::StageRequest& request) {
  uint64_t seq = 0;
  bool over = false;
  {
    absl::MutexLock lock(&mu_);
    if (next_seq_ - next_answer_ >= kMaxTrainingRequests) {
      over = true;
    } else {
      seq = next_seq_++;
    }
  }
  if (over) {
    return Fail(absl::ResourceExhaustedError(
        absl::StrCat("more than ", kMaxTrainingRequests,
                     " training requests pending on this session")));
  }
  switch (request.kind_case()) {
    case v1::StageRequest::kForward:
      return TrainForward(seq, request.forward());
    case v1::StageRequest::kBackward:
      return TrainBackward(seq, request.backward());
    case v1::StageRequest::kOptimizerStep:
      return TrainStep(seq, request.optimizer_step());
    case v1::StageRequest::kRestore:
      return TrainRestore(seq, request.restore());
    case v1::StageRequest::kExport:
      return TrainExport(seq, request.export_());
    default:
      return Fail(absl::InvalidArgumentError("empty StageRequest"));
  }
}

bool SessionHandler::Finished() {
  absl::MutexLock lock(&mu_);
  return finished_;
}

SessionHandler::TrainingView SessionHandler::View() {
  absl::MutexLock lock(&mu_);
  if (finished_) return {};
  return {stage_, next_, codec_};
}

void SessionHandler::RespondAt(uint64_t seq, v1::StageResponse response) {
  {
    absl::MutexLock lock(&mu_);
    if (finished_ || transport_ == nullptr) return;
    answers_[seq] = std::move(response);
    for (auto it = answers_.find(next_answer_); it != answers_.end();
         it = answers_.find(next_answer_)) {
      transport_->Send(it->second);
      answers_.erase(it);
      ++next_answer_;
    }
  }
  MaybeFinishIdle();
}

void SessionHandler::ToNext(v1::StageRequest request,
                            std::function<void(v1::StageResponse)> then) {
  std::shared_ptr<NextHop> next;
  {
    absl::MutexLock lock(&mu_);
    next = next_;
  }
  if (!next) return Fail(absl::CancelledError("session is over"));
  std::weak_ptr<SessionHandler> weak = weak_from_this();
  next->Send(std::move(request),
             [weak, then = std::move(then)](
                 absl::StatusOr<v1::StageResponse> r) mutable {
               auto self = weak.lock();
               if (!self) return;
               if (!r.ok()) return self->Fail(r.status());
               then(*std::move(r));
             });
}

void SessionHandler::TrainForward(uint64_t seq,
                                  const v1::ForwardRequest& forward) {
  const TrainingView v = View();
  if (!v.stage) return;
  const ModelConfig& config = v.stage->model->config();
  const bool last = !v.next;
  const bool has_head = v.stage->model->spec().head;
  auto input = wire::Decode(forward.hidden(), config.hidden_size,
                            "forward.hidden", env_.limits);
  if (!input.ok()) return Fail(input.status());
  const int64_t rows = input->size(0);
  at::Tensor labels;
  int64_t labelled = 0;  // Rows whose label counts.
  if (forward.labels_size() > 0) {
    if (!last || !has_head) {
      // Pass them on: the hop with the head computes the loss.
    } else if (forward.labels_size() != rows) {
      return Fail(absl::InvalidArgumentError(
          absl::StrCat("forward.labels: ", forward.labels_size(),
                       " labels for ", rows, " rows")));
    } else {
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t l = forward.labels(static_cast<int>(i));
        if (l != -100 && (l < 0 || l >= config.vocab_size)) {
          return Fail(absl::InvalidArgumentError(absl::StrCat(
              "forward.labels[", i, "]: ", l, " is not a token id (vocabulary ",
              config.vocab_size, ") or -100")));
        }
        labelled += l != -100;
      }
      labels = at::tensor(std::vector<int64_t>(forward.labels().begin(),
                                               forward.labels().end()),
                          at::kLong);
    }
  } else if (last && has_head && forward.train()) {
    return Fail(absl::InvalidArgumentError(
        "forward.labels: a training forward on the hop with the LM head "
        "needs labels (or a U-shaped route)"));
  }
  if (!std::isfinite(forward.loss_scale()) || forward.loss_scale() < 0 ||
      forward.loss_scale() > kMaxLossScale) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("forward.loss_scale: ", forward.loss_scale(), " (in [0, ",
                     kMaxLossScale, "])")));
  }
  if (labels.defined() && forward.train() && labelled == 0) {
    return Fail(absl::InvalidArgumentError(
        "forward.labels: every label is -100 (no token to learn from)"));
  }
  // One device's NaN would spread through the job's shared gradients.
  if (!at::isfinite(*input).all().item<bool>()) {
    return Fail(
        absl::InvalidArgumentError("forward.hidden: non-finite values"));
  }
  const auto received = std::chrono::steady_clock::now();
  auto self = shared_from_this();
  job_->Submit([self, v, seq, forward, input = *std::move(input), labels,
                labelled, last, received]() mutable {
    if (self->Finished()) return;  // Its micro-batch would never be freed.
    const auto started = std::chrono::steady_clock::now();
    StageInput in;
    in.hidden = input;
    const uint64_t key = self->Key(forward.step());
    v1::HopTiming timing;
    timing.set_node(self->node_);
    v1::StageResponse response;
    v1::ForwardResult* result = response.mutable_forward();
    result->set_step(forward.step());
    if (labels.defined()) {
      auto loss = self->job_->ForwardLoss(
          key, std::move(in), labels, forward.loss_scale(), forward.train());
      if (!loss.ok()) return self->Fail(loss.status());
      result->mutable_loss()->set_loss(*loss);
      result->mutable_loss()->set_tokens(labelled);
      timing.set_compute_ms(MillisSince(started));
      timing.set_total_ms(MillisSince(received));
      *result->add_timings() = timing;
      return self->RespondAt(seq, std::move(response));
    }
    auto out = self->job_->Forward(key, std::move(in), forward.train());
    if (!out.ok()) return self->Fail(out.status());
    timing.set_compute_ms(MillisSince(started));
    if (last) {
      // Logits travel as fp32; hidden states (U-shaped) in the codec.
      const bool hidden = !v.stage->model->spec().head;
      absl::Status s = wire::Encode(*out, hidden ? v.codec : v1::CODEC_FP32,
                                    result->mutable_output());
      if (!s.ok()) return self->Fail(s);
      timing.set_total_ms(MillisSince(received));
      *result->add_timings() = timing;
      return self->RespondAt(seq, std::move(response));
    }
    v1::StageRequest req;
    *req.mutable_forward() = forward;
    absl::Status s =
        wire::Encode(*out, v.codec, req.mutable_forward()->mutable_hidden());
    if (!s.ok()) return self->Fail(s);
    self->ToNext(std::move(req),
                 [self, seq, timing, received](v1::StageResponse r) mutable {
                   if (!r.has_forward()) {
                     return self->Fail(absl::InternalError(
                         "next hop answered a forward with no result"));
                   }
                   timing.set_total_ms(MillisSince(received));
                   auto* timings = r.mutable_forward()->mutable_timings();
                   timings->Add()->Swap(&timing);
                   for (int i = timings->size() - 1; i > 0; --i)
                     timings->SwapElements(i, i - 1);
                   self->RespondAt(seq, std::move(r));
                 });
  });
}

void SessionHandler::TrainBackward(uint64_t seq,
                                   const v1::BackwardRequest& backward) {
  const TrainingView v = View();
  if (!v.stage) return;
  auto self = shared_from_this();
  // Runs this hop's backward given dLoss/dOutput (undefined: from the
  // loss) and answers with dLoss/dInput.
  auto run = [self, seq, codec = v.codec,
              step = backward.step()](at::Tensor grad) {
    self->job_->Submit([self, seq, codec, step, grad]() {
      if (self->Finished()) return;
      auto g = self->job_->Backward(self->Key(step), grad);
      if (!g.ok()) return self->Fail(g.status());
      v1::StageResponse response;
      response.mutable_backward()->set_step(step);
      absl::Status s = wire::Encode(
          *g, codec, response.mutable_backward()->mutable_grad_input());
      if (!s.ok()) return self->Fail(s);
      self->RespondAt(seq, std::move(response));
    });
  };
  const ModelConfig& config = v.stage->model->config();
  if (v.next) {
    v1::StageRequest req;
    *req.mutable_backward() = backward;
    const int64_t hidden = config.hidden_size;
    // Passed on from the job's thread: behind this session's forward of the
    // same micro-batch, which the next hop must see first (a device sends
    // a backward right behind its forward).
    job_->Submit([self, req = std::move(req), run, hidden]() mutable {
      self->ToNext(std::move(req), [self, run, hidden](v1::StageResponse r) {
        if (!r.has_backward()) {
          return self->Fail(absl::InternalError(
              "next hop answered a backward with no gradient"));
        }
        auto grad = wire::Decode(r.backward().grad_input(), hidden,
                                 "backward.grad_input", self->env_.limits);
        if (!grad.ok()) return self->Fail(grad.status());
        if (!at::isfinite(*grad).all().item<bool>()) {
          return self->Fail(absl::InvalidArgumentError(
              "backward.grad_input: non-finite values from the next hop"));
        }
        run(*std::move(grad));
      });
    });
    return;
  }
  if (!backward.has_grad_output()) return run(at::Tensor());
  const int64_t cols =
      v.stage->model->spec().head ? config.vocab_size : config.hidden_size;
  auto grad = wire::Decode(backward.grad_output(), cols, "backward.grad_output",
                           env_.limits);
  if (!grad.ok()) return Fail(grad.status());
  if (!at::isfinite(*grad).all().item<bool>()) {
    return Fail(
        absl::InvalidArgumentError("backward.grad_output: non-finite values"));
  }
  run(*std::move(grad));
}

void SessionHandler::TrainStep(uint64_t seq, const v1::OptimizerStep& step) {
  if (!std::isfinite(step.upstream_sq_norm()) || step.upstream_sq_norm() < 0) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "optimizer_step.upstream_sq_norm: ", step.upstream_sq_norm(),
        " (finite, >= 0)")));
  }
  const TrainingView v = View();
  if (!v.stage) return;
  auto self = shared_from_this();
  // Applies the update once the chain's total is known and answers.
  auto apply = [self, seq, step](v1::StageResponse r) {
    self->job_->Submit([self, seq, step, r]() mutable {
      auto outcome = self->job_->ApplyStep(
          step.step(), r.step().total_sq_norm(), step.checkpoint());
      if (!outcome.ok()) return self->Fail(outcome.status());
      v1::StepResult* result = r.mutable_step();
      result->set_step(step.step());
      result->set_total_sq_norm(outcome->total_sq_norm);
      result->set_grad_scale(outcome->grad_scale);
      result->set_lr(outcome->lr);
      self->RespondAt(seq, std::move(r));
    });
  };
  // Every device of the job arrives before the norm is taken: the shard's
  // gradient then holds all their micro-batches.
  const bool last = !v.next;
  job_->ArriveAtStep(
      step.step(), training_prefix_, [self, step, apply, last]() {
        if (self->Finished()) return;
        const double sum = step.upstream_sq_norm() + self->job_->SquaredNorm();
        if (last) {
          v1::StageResponse r;
          r.mutable_step()->set_total_sq_norm(sum);
          return apply(std::move(r));
        }
        v1::StageRequest req;
        *req.mutable_optimizer_step() = step;
        req.mutable_optimizer_step()->set_upstream_sq_norm(sum);
        self->ToNext(std::move(req), [self, apply](v1::StageResponse r) {
          if (!r.has_step()) {
            return self->Fail(absl::InternalError(
                "next hop answered an optimizer step with no result"));
          }
          apply(std::move(r));
        });
      });
}

void SessionHandler::TrainRestore(uint64_t seq,
                                  const v1::RestoreRequest& restore) {
  const TrainingView v = View();
  if (!v.stage) return;
  auto self = shared_from_this();
  auto run = [self, seq, step = restore.step()]() {
    self->job_->Submit([self, seq, step]() {
      absl::Status s = self->job_->Restore(step);
      if (!s.ok()) return self->Fail(s);
      v1::StageResponse response;
      response.set_restored(step);
      self->RespondAt(seq, std::move(response));
    });
  };
  if (!v.next) return run();
  v1::StageRequest req;
  *req.mutable_restore() = restore;
  // Passed on from the job's thread, in order with this session's other
  // requests to the next hop.
  job_->Submit([self, req = std::move(req), run]() mutable {
    self->ToNext(std::move(req), [self, run](v1::StageResponse r) {
      if (r.kind_case() != v1::StageResponse::kRestored) {
        return self->Fail(
            absl::InternalError("next hop answered a restore with no result"));
      }
      run();
    });
  });
}

void SessionHandler::TrainExport(uint64_t seq,
                                 const v1::ExportRequest& request) {
  const TrainingView v = View();
  if (!v.stage) return;
  auto self = shared_from_this();
  auto run = [self, v, seq, request](v1::StageResponse r) {
    self->job_->Submit([self, v, seq, request, r]() mutable {
      v1::AdapterShard mine;
      self->job_->Export(request.gradients(), &mine);
      const BlockRange b = v.stage->model->spec().blocks;
      mine.add_hops(
          absl::StrCat(self->node_, " [", b.first, ", ", b.last, ")"));
      if (r.has_shard()) {
        const v1::AdapterShard& theirs = r.shard();
        mine.set_job_step(std::min(mine.job_step(), theirs.job_step()));
        for (const auto& f : theirs.factors()) *mine.add_factors() = f;
        for (const auto& g : theirs.gradients()) *mine.add_gradients() = g;
        for (const auto& h : theirs.hops()) mine.add_hops(h);
      }
      v1::StageResponse response;
      *response.mutable_shard() = std::move(mine);
      self->RespondAt(seq, std::move(response));
    });
  };
  if (!v.next) return run(v1::StageResponse());
  v1::StageRequest req;
  *req.mutable_export_() = request;
  job_->Submit([self, req = std::move(req), run]() mutable {
    self->ToNext(std::move(req), [self, run](v1::StageResponse r) {
      if (!r.has_shard()) {
        return self->Fail(
            absl::InternalError("next hop answered an export with no shard"));
      }
      run(std::move(r));
    });
  });
}

}  // namespace edgesplit
