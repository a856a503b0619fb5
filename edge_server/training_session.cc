#include "edge_server/training_session.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/torch_util.h"

namespace edgesplit {
namespace {

// A device keeps at most a step's micro-batches in flight (forward and
// backward each); more is a client that does not read its answers.
constexpr uint64_t kMaxTrainingRequests = 256;
// Micro-batch shares of a step's loss are at most 1; allow headroom.
constexpr double kMaxLossScale = 1e3;

}  // namespace

TrainingSession::TrainingSession(const SessionEnv& env,
                                 SessionTransport* transport,
                                 absl::Time deadline, OpenedHop hop,
                                 std::shared_ptr<TrainingJob> job)
    : ServerSession(env, transport, deadline, std::move(hop)),
      job_(std::move(job)),
      prefix_(job_->NewSessionPrefix()) {}

void TrainingSession::OnRequest(const v1::StageRequest& request) {
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
    return End(absl::ResourceExhaustedError(
        absl::StrCat("more than ", kMaxTrainingRequests,
                     " training requests pending on this session")));
  }
  switch (request.kind_case()) {
    case v1::StageRequest::kForward:
      return Forward(seq, request.forward());
    case v1::StageRequest::kBackward:
      return Backward(seq, request.backward());
    case v1::StageRequest::kOptimizerStep:
      return Step(seq, request.optimizer_step());
    case v1::StageRequest::kRestore:
      return Restore(seq, request.restore());
    case v1::StageRequest::kExport:
      return Export(seq, request.export_());
    default:
      return End(absl::InvalidArgumentError("empty StageRequest"));
  }
}

void TrainingSession::RespondAt(uint64_t seq, v1::StageResponse response) {
  {
    absl::MutexLock lock(&mu_);
    if (OverLocked()) return;
    answers_[seq] = std::move(response);
    for (auto it = answers_.find(next_answer_); it != answers_.end();
         it = answers_.find(next_answer_)) {
      RespondLocked(it->second);
      answers_.erase(it);
      ++next_answer_;
    }
  }
  MaybeFinishIdle();
}

bool TrainingSession::IdleLocked() const { return next_answer_ == next_seq_; }

void TrainingSession::OnEndLocked() {
  kept_.clear();
  job_->LeaveBarriers(prefix_);
  // Its micro-batches in flight will never see their backward. (The
  // gradients it already accumulated stay in the shard until the job's next
  // update or restore: a device resuming restores; another device of the
  // job stepping first would include them.)
  job_->Submit([job = job_, prefix = prefix_] { job->AbortSession(prefix); });
}

void TrainingSession::ConfirmOpen(v1::SessionOpened* mine,
                                  const v1::SessionOpened* downstream) {
  for (uint64_t s : job_->CheckpointSteps()) mine->add_checkpoint_steps(s);
  mine->set_job_step(job_->step());
  if (downstream == nullptr) return;
  const auto& theirs = downstream->checkpoint_steps();
  std::vector<uint64_t> both;
  for (uint64_t s : mine->checkpoint_steps()) {
    if (std::find(theirs.begin(), theirs.end(), s) != theirs.end()) {
      both.push_back(s);
    }
  }
  mine->clear_checkpoint_steps();
  for (uint64_t s : both) mine->add_checkpoint_steps(s);
  mine->set_job_step(std::min(mine->job_step(), downstream->job_step()));
}

void TrainingSession::Forward(uint64_t seq, const v1::ForwardRequest& forward) {
  if (Over()) return;
  if (forward.rollback() != 0 || forward.argmax_only()) {
    return End(absl::InvalidArgumentError(
        "forward.rollback and forward.argmax_only are for inference sessions"));
  }
  const ModelConfig& config = hop_.stage->model->config();
  const bool loss_here = hop_.role == HopRole::kLastWithHead;
  auto input = wire::Decode(forward.hidden(), config.hidden_size,
                            "forward.hidden", env_.limits);
  if (!input.ok()) return End(input.status());
  const int64_t rows = input->size(0);
  at::Tensor labels;
  int64_t labelled = 0;  // Rows whose label counts.
  if (forward.labels_size() > 0) {
    if (!loss_here) {
      // Pass them on: the hop with the head computes the loss.
    } else if (forward.labels_size() != rows) {
      return End(absl::InvalidArgumentError(
          absl::StrCat("forward.labels: ", forward.labels_size(),
                       " labels for ", rows, " rows")));
    } else {
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t l = forward.labels(static_cast<int>(i));
        if (l != -100 && (l < 0 || l >= config.vocab_size)) {
          return End(absl::InvalidArgumentError(absl::StrCat(
              "forward.labels[", i, "]: ", l, " is not a token id (vocabulary ",
              config.vocab_size, ") or -100")));
        }
        labelled += l != -100;
      }
      labels = at::tensor(std::vector<int64_t>(forward.labels().begin(),
                                               forward.labels().end()),
                          at::kLong);
    }
  } else if (loss_here && forward.train()) {
    return End(absl::InvalidArgumentError(
        "forward.labels: a training forward on the hop with the LM head "
        "needs labels (or a U-shaped route)"));
  }
  if (!std::isfinite(forward.loss_scale()) || forward.loss_scale() < 0 ||
      forward.loss_scale() > kMaxLossScale) {
    return End(absl::InvalidArgumentError(
        absl::StrCat("forward.loss_scale: ", forward.loss_scale(), " (in [0, ",
                     kMaxLossScale, "])")));
  }
  if (labels.defined() && forward.train() && labelled == 0) {
    return End(absl::InvalidArgumentError(
        "forward.labels: every label is -100 (no token to learn from)"));
  }
  // One device's NaN would spread through the job's shared gradients.
  if (!at::isfinite(*input).all().item<bool>()) {
    return End(absl::InvalidArgumentError("forward.hidden: non-finite values"));
  }
  if (forward.train() && env_.kept_training_tokens != nullptr) {
    // What this hop keeps for the backward, until that arrives.
    auto charge = env_.kept_training_tokens->Take(rows);
    if (!charge.ok()) return End(charge.status());
    absl::MutexLock lock(&mu_);
    kept_[forward.step()] = *std::move(charge);
  }
  const auto received = std::chrono::steady_clock::now();
  job_->Submit([self = Self(), seq, forward, input = *std::move(input), labels,
                labelled, received]() mutable {
    self->RunForward(seq, forward, std::move(input), labels, labelled,
                     received);
  });
}

void TrainingSession::RunForward(
    uint64_t seq, const v1::ForwardRequest& forward, at::Tensor input,
    const at::Tensor& labels, int64_t labelled,
    std::chrono::steady_clock::time_point received) {
  if (Over()) return;  // Its micro-batch would never be freed.
  const auto started = std::chrono::steady_clock::now();
  StageInput in;
  in.hidden = std::move(input);
  const uint64_t key = Key(forward.step());
  v1::HopTiming timing;
  timing.set_node(node_);
  v1::StageResponse response;
  v1::ForwardResult* result = response.mutable_forward();
  result->set_step(forward.step());
  if (labels.defined()) {
    auto loss = job_->ForwardLoss(key, std::move(in), labels,
                                  forward.loss_scale(), forward.train());
    if (!loss.ok()) return End(loss.status());
    result->mutable_loss()->set_loss(*loss);
    result->mutable_loss()->set_tokens(labelled);
    timing.set_compute_ms(MillisSince(started));
    timing.set_total_ms(MillisSince(received));
    *result->add_timings() = timing;
    return RespondAt(seq, std::move(response));
  }
  auto out = job_->Forward(key, std::move(in), forward.train());
  if (!out.ok()) return End(out.status());
  timing.set_compute_ms(MillisSince(started));
  if (hop_.role != HopRole::kMiddle) {
    // Logits travel as fp32; hidden states (U-shaped) in the codec.
    const bool hidden = hop_.role == HopRole::kLastHidden;
    absl::Status s = wire::Encode(*out, hidden ? hop_.codec : v1::CODEC_FP32,
                                  result->mutable_output());
    if (!s.ok()) return End(s);
    timing.set_total_ms(MillisSince(received));
    *result->add_timings() = timing;
    return RespondAt(seq, std::move(response));
  }
  v1::StageRequest req;
  *req.mutable_forward() = forward;
  absl::Status s =
      wire::Encode(*out, hop_.codec, req.mutable_forward()->mutable_hidden());
  if (!s.ok()) return End(s);
  ToNext(std::move(req),
         [self = Self(), seq, timing, received](v1::StageResponse r) mutable {
           if (!r.has_forward()) {
             return self->End(absl::InternalError(
                 "next hop answered a forward with no result"));
           }
           timing.set_total_ms(MillisSince(received));
           PrependTiming(std::move(timing), r.mutable_forward());
           self->RespondAt(seq, std::move(r));
         });
}

void TrainingSession::Backward(uint64_t seq,
                               const v1::BackwardRequest& backward) {
  if (Over()) return;
  auto self = Self();
  // Runs this hop's backward given dLoss/dOutput (undefined: from the
  // loss) and answers with dLoss/dInput.
  auto run = [self, seq, codec = hop_.codec,
              step = backward.step()](at::Tensor grad) {
    self->job_->Submit([self, seq, codec, step, grad]() {
      if (self->Over()) return;
      auto g = self->job_->Backward(self->Key(step), grad);
      {
        absl::MutexLock lock(&self->mu_);
        self->kept_.erase(step);  // The job freed the micro-batch.
      }
      if (!g.ok()) return self->End(g.status());
      v1::StageResponse response;
      response.mutable_backward()->set_step(step);
      absl::Status s = wire::Encode(
          *g, codec, response.mutable_backward()->mutable_grad_input());
      if (!s.ok()) return self->End(s);
      self->RespondAt(seq, std::move(response));
    });
  };
  const ModelConfig& config = hop_.stage->model->config();
  if (hop_.role == HopRole::kMiddle) {
    v1::StageRequest req;
    *req.mutable_backward() = backward;
    const int64_t hidden = config.hidden_size;
    // Passed on from the job's thread: behind this session's forward of the
    // same micro-batch, which the next hop must see first (a device sends
    // a backward right behind its forward).
    job_->Submit([self, req = std::move(req), run, hidden]() mutable {
      self->ToNext(std::move(req), [self, run, hidden](v1::StageResponse r) {
        if (!r.has_backward()) {
          return self->End(absl::InternalError(
              "next hop answered a backward with no gradient"));
        }
        auto grad = wire::Decode(r.backward().grad_input(), hidden,
                                 "backward.grad_input", self->env_.limits);
        if (!grad.ok()) return self->End(grad.status());
        if (!at::isfinite(*grad).all().item<bool>()) {
          return self->End(absl::InvalidArgumentError(
              "backward.grad_input: non-finite values from the next hop"));
        }
        run(*std::move(grad));
      });
    });
    return;
  }
  if (!backward.has_grad_output()) return run(at::Tensor());
  const int64_t cols = hop_.role == HopRole::kLastWithHead ? config.vocab_size
                                                           : config.hidden_size;
  auto grad = wire::Decode(backward.grad_output(), cols, "backward.grad_output",
                           env_.limits);
  if (!grad.ok()) return End(grad.status());
  if (!at::isfinite(*grad).all().item<bool>()) {
    return End(
        absl::InvalidArgumentError("backward.grad_output: non-finite values"));
  }
  run(*std::move(grad));
}

void TrainingSession::Step(uint64_t seq, const v1::OptimizerStep& step) {
  if (!std::isfinite(step.upstream_sq_norm()) || step.upstream_sq_norm() < 0) {
    return End(absl::InvalidArgumentError(absl::StrCat(
        "optimizer_step.upstream_sq_norm: ", step.upstream_sq_norm(),
        " (finite, >= 0)")));
  }
  if (Over()) return;
  auto self = Self();
  // Applies the update once the chain's total is known and answers.
  auto apply = [self, seq, step](v1::StageResponse r) {
    self->job_->Submit([self, seq, step, r]() mutable {
      auto outcome =
          self->job_->ApplyStep(step.step(), r.step().total_sq_norm(),
                                step.checkpoint(), step.participants());
      if (!outcome.ok()) return self->End(outcome.status());
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
  const bool last = hop_.role != HopRole::kMiddle;
  absl::Status arrived = job_->ArriveAtStep(
      step.step(), prefix_, step.participants(), [self, step, apply, last]() {
        if (self->Over()) return;
        const double sum = step.upstream_sq_norm() +
                           self->job_->SquaredNorm(step.participants());
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
            return self->End(absl::InternalError(
                "next hop answered an optimizer step with no result"));
          }
          apply(std::move(r));
        });
      });
  if (!arrived.ok()) End(arrived);
}

void TrainingSession::Restore(uint64_t seq, const v1::RestoreRequest& restore) {
  if (Over()) return;
  auto self = Self();
  auto run = [self, seq, step = restore.step()]() {
    self->job_->Submit([self, seq, step]() {
      absl::Status s = self->job_->Restore(step);
      if (!s.ok()) return self->End(s);
      v1::StageResponse response;
      response.set_restored(step);
      self->RespondAt(seq, std::move(response));
    });
  };
  if (hop_.role != HopRole::kMiddle) return run();
  v1::StageRequest req;
  *req.mutable_restore() = restore;
  // Passed on from the job's thread, in order with this session's other
  // requests to the next hop.
  job_->Submit([self, req = std::move(req), run]() mutable {
    self->ToNext(std::move(req), [self, run](v1::StageResponse r) {
      if (r.kind_case() != v1::StageResponse::kRestored) {
        return self->End(
            absl::InternalError("next hop answered a restore with no result"));
      }
      run();
    });
  });
}

void TrainingSession::Export(uint64_t seq, const v1::ExportRequest& request) {
  if (Over()) return;
  auto self = Self();
  auto run = [self, seq, request](v1::StageResponse r) {
    self->job_->Submit([self, seq, request, r]() mutable {
      v1::AdapterShard mine;
      self->job_->Export(request.gradients(), &mine);
      const BlockRange b = self->hop_.stage->model->spec().blocks;
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
  if (hop_.role != HopRole::kMiddle) return run(v1::StageResponse());
  v1::StageRequest req;
  *req.mutable_export_() = request;
  job_->Submit([self, req = std::move(req), run]() mutable {
    self->ToNext(std::move(req), [self, run](v1::StageResponse r) {
      if (!r.has_shard()) {
        return self->End(
            absl::InternalError("next hop answered an export with no shard"));
      }
      run(std::move(r));
    });
  });
}

}  // namespace edgesplit
