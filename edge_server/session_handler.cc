#include "edge_server/session_handler.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "runtime/torch_util.h"

namespace edgesplit {
namespace {

double MillisSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(
             std::chrono::steady_clock::now() - t)
      .count();
}

}  // namespace

SessionHandler::SessionHandler(const SessionEnv& env,
                               SessionTransport* transport, absl::Time deadline)
    : env_(env),
      node_(env.host->node()),
      deadline_(deadline),
      transport_(transport) {
  last_activity_ = absl::Now();
}

SessionHandler::~SessionHandler() = default;

absl::Time SessionHandler::last_activity() const {
  absl::MutexLock lock(&mu_);
  return last_activity_;
}

void SessionHandler::OnRequest(const v1::StageRequest& request) {
  {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    last_activity_ = absl::Now();
  }
  if (training_.load() && request.kind_case() != v1::StageRequest::kOpen &&
      request.kind_case() != v1::StageRequest::kClose) {
    return OnTrainingRequest(request);
  }
  switch (request.kind_case()) {
    case v1::StageRequest::kOpen:
      Open(request.open());
      break;
    case v1::StageRequest::kForward:
      Forward(request.forward());
      break;
    case v1::StageRequest::kBackward:
    case v1::StageRequest::kOptimizerStep:
    case v1::StageRequest::kRestore:
    case v1::StageRequest::kExport:
      Fail(absl::FailedPreconditionError(
          "training requests need a session opened with a training spec"));
      break;
    case v1::StageRequest::kClose:
      Fail(absl::OkStatus());
      break;
    default:
      Fail(absl::InvalidArgumentError("empty StageRequest"));
  }
}

void SessionHandler::Open(const v1::OpenSession& open) {
  const std::string& node = env_.host->node();
  bool already_open;
  {
    absl::MutexLock lock(&mu_);
    already_open = opened_;
  }
  if (already_open) {
    return Fail(absl::FailedPreconditionError("session is already open"));
  }
  if (open.protocol_version() != kProtocolVersion) {
    return Fail(absl::FailedPreconditionError(absl::StrCat(
        "protocol version ", open.protocol_version(), " is not supported by ",
        node, " (speaks ", kProtocolVersion, ")")));
  }
  if (open.session_id().empty()) {
    return Fail(absl::InvalidArgumentError("OpenSession needs a session_id"));
  }
  if (open.route_size() == 0 || open.route(0).node() != node) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("route[0] names node \"",
                     open.route_size() > 0 ? open.route(0).node() : "",
                     "\" but this is ", node)));
  }
  const v1::Hop& me = open.route(0);
  auto stage =
      env_.host->Find(open.model_id(), me.first_block(), me.last_block());
  if (!stage.ok()) return Fail(stage.status());
  bool codec_ok = false;
  for (v1::Codec c : wire::SupportedCodecs()) codec_ok |= c == open.codec();
  if (!codec_ok) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("unsupported codec ", static_cast<int>(open.codec()))));
  }
  const bool last = open.route_size() == 1;
  const bool has_head = (*stage)->model->spec().head;
  if (last && !has_head && !open.return_hidden()) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat(node,
                     " is the route's last hop but holds no LM head; set "
                     "return_hidden for a U-shaped split")));
  }
  if (!last && has_head) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat(node, " holds the LM head but the route continues to ",
                     open.route(1).node())));
  }
  if (!open.has_training() && absl::StartsWith(open.adapter(), "train:")) {
    return Fail(absl::InvalidArgumentError(absl::StrCat(
        "adapter \"", open.adapter(),
        "\" is a training job's (it changes while it trains): export it "
        "and load the PEFT adapter instead")));
  }
  std::shared_ptr<TrainingJob> job;
  if (open.has_training()) {
    if (env_.jobs == nullptr) {
      return Fail(absl::FailedPreconditionError(
          absl::StrCat(node, " does not serve training sessions")));
    }
    if (open.route_size() == 1 && has_head && open.return_hidden()) {
      return Fail(absl::InvalidArgumentError(
          "return_hidden with the LM head here: a U-shaped training route "
          "ends before the head"));
    }
    auto got = env_.jobs->Get(open.training(), open.model_id(), *stage);
    if (!got.ok()) return Fail(got.status());
    job = *std::move(got);
  }
  std::shared_ptr<NextHop> next;
  if (!last) {
    v1::OpenSession forward_open = open;
    forward_open.mutable_route()->DeleteSubrange(0, 1);
    auto opened = env_.next_hops->Open(forward_open, deadline_);
    if (!opened.ok()) return Fail(opened.status());
    next = std::move(*opened);
  }
  {
    absl::MutexLock lock(&mu_);
    if (finished_) {
      // Cancelled while opening: keep nothing.
      if (next) next->Close();
      return;
    }
    session_id_ = open.session_id();
    stage_ = *stage;
    if (job) {
      job_ = job;
      training_prefix_ = job->NewSessionPrefix();
      training_.store(true);
    } else {
      cache_ = stage_->model->NewCache(env_.host->kv_budget());
    }
    next_ = next;
    codec_ = open.codec();
    adapter_ = open.adapter();
    return_hidden_ = open.return_hidden();
    opened_ = true;
  }
  v1::StageResponse opened;
  opened.mutable_opened()->set_session_id(open.session_id());
  if (job) {
    for (uint64_t s : job->CheckpointSteps()) {
      opened.mutable_opened()->add_checkpoint_steps(s);
    }
    opened.mutable_opened()->set_job_step(job->step());
  }
  if (!next) {
    Respond(opened);
    return;
  }
  // Confirm only once the rest of the chain has opened: a bad hop further
  // down fails the open, not the first token.
  v1::StageRequest req;
  *req.mutable_open() = open;
  req.mutable_open()->mutable_route()->DeleteSubrange(0, 1);
  std::weak_ptr<SessionHandler> weak = weak_from_this();
  next->Send(std::move(req), [weak, opened](
                                 absl::StatusOr<v1::StageResponse> r) mutable {
    auto self = weak.lock();
    if (!self) return;
    if (!r.ok()) return self->Fail(r.status());
    if (!r->has_opened()) {
      return self->Fail(absl::InternalError("next hop did not confirm open"));
    }
    if (self->training_.load()) {
      // Checkpoints the whole chain holds, and its least advanced job.
      v1::SessionOpened* mine = opened.mutable_opened();
      const auto& theirs = r->opened().checkpoint_steps();
      std::vector<uint64_t> both;
      for (uint64_t s : mine->checkpoint_steps()) {
        if (std::find(theirs.begin(), theirs.end(), s) != theirs.end()) {
          both.push_back(s);
        }
      }
      mine->clear_checkpoint_steps();
      for (uint64_t s : both) mine->add_checkpoint_steps(s);
      mine->set_job_step(std::min(mine->job_step(), r->opened().job_step()));
    }
    self->Respond(opened);
  });
}

void SessionHandler::Forward(const v1::ForwardRequest& forward) {
  Pending p;
  p.received = std::chrono::steady_clock::now();
  int64_t hidden_size = 0;
  absl::Status error;
  std::shared_ptr<HostedStage> stage;
  {
    absl::MutexLock lock(&mu_);
    if (!opened_) {
      error = absl::FailedPreconditionError("forward before OpenSession");
    } else if (forward.step() != next_step_) {
      error = absl::InvalidArgumentError(
          absl::StrCat("forward step ", forward.step(),
                       " out of order (expected ", next_step_, ")"));
    } else {
      ++next_step_;
      hidden_size = stage_->model->config().hidden_size;
      stage = stage_;
    }
  }
  if (!error.ok()) return Fail(error);
  // Re-planned away: the stage still runs for this session, but the plan
  // moved it. Failing at this token boundary (NOT_FOUND, which devices
  // answer by taking the new route and replaying their tokens) moves the
  // session to the better plan instead of finishing on the old one.
  if (stage->retired.load()) {
    const BlockRange blocks = stage->model->spec().blocks;
    return Fail(absl::NotFoundError(
        absl::StrCat("re-planned: node ", env_.host->node(),
                     " no longer serves model ", stage->model_id, " blocks [",
                     blocks.first, ", ", blocks.last, ") this way")));
  }
  auto input = wire::Decode(forward.hidden(), hidden_size, "forward.hidden",
                            env_.limits);
  if (!input.ok()) return Fail(input.status());
  p.request = forward;
  p.request.clear_hidden();  // Decoded; don't keep the bytes twice.
  p.input = *std::move(input);
  {
    absl::MutexLock lock(&mu_);
    if (queue_.size() < kMaxPendingRequests) {
      queue_.push_back(std::move(p));
      SubmitLocked();
      return;
    }
  }
  Fail(absl::ResourceExhaustedError(
      absl::StrCat("more than ", kMaxPendingRequests,
                   " forward requests pending on this session")));
}

void SessionHandler::SubmitLocked() {
  if (computing_ || queue_.empty() || finished_) return;
  computing_ = true;
  Pending p = std::move(queue_.front());
  queue_.pop_front();
  BatchItem item;
  item.cache = cache_.get();
  item.input = p.input;
  item.last_token_only = p.request.last_token_only();
  item.adapter = adapter_;
  const auto started = std::chrono::steady_clock::now();
  // The callback owns a reference: the cache outlives the batch item.
  auto self = shared_from_this();
  item.done = [self, p = std::move(p),
               started](absl::StatusOr<at::Tensor> out) mutable {
    self->OnComputed(std::move(p), std::move(out), started);
  };
  stage_->batcher->Submit(std::move(item));
}

void SessionHandler::OnComputed(Pending p, absl::StatusOr<at::Tensor> out,
                                std::chrono::steady_clock::time_point started) {
  std::shared_ptr<NextHop> next;
  v1::Codec codec;
  bool return_hidden;
  {
    absl::MutexLock lock(&mu_);
    computing_ = false;
    if (finished_) {
      // The session ended while this step ran: free its memory now.
      EndLocked();
      return;
    }
    next = next_;
    codec = codec_;
    return_hidden = return_hidden_;
    if (next && out.ok()) ++next_pending_;
    if (out.ok()) SubmitLocked();  // This session's next step may start.
  }
  if (!out.ok()) return Fail(out.status());
  v1::HopTiming timing;
  timing.set_node(env_.host->node());
  timing.set_compute_ms(MillisSince(started));
  const uint64_t step = p.request.step();
  if (!next) {
    if (return_hidden && p.request.last_token_only() && out->size(0) > 1) {
      // U-shaped: the device's head needs only the last token's state.
      *out = out->narrow(0, out->size(0) - 1, 1);
    }
    v1::StageResponse response;
    v1::ForwardResult* result = response.mutable_forward();
    result->set_step(step);
    // Logits travel as fp32 (a lossy codec could change the sampled
    // token); hidden states of a U-shaped split use the session's codec.
    absl::Status s = wire::Encode(*out, return_hidden ? codec : v1::CODEC_FP32,
                                  result->mutable_output());
    if (!s.ok()) return Fail(s);
    timing.set_total_ms(MillisSince(p.received));
    *result->add_timings() = timing;
    Respond(response);
    return MaybeFinishIdle();
  }
  v1::StageRequest req;
  v1::ForwardRequest* fwd = req.mutable_forward();
  fwd->set_step(step);
  fwd->set_last_token_only(p.request.last_token_only());
  absl::Status s = wire::Encode(*out, codec, fwd->mutable_hidden());
  if (!s.ok()) return Fail(s);
  std::weak_ptr<SessionHandler> weak = weak_from_this();
  const auto received = p.received;
  next->Send(std::move(req), [weak, timing, received, step](
                                 absl::StatusOr<v1::StageResponse> r) mutable {
    auto self = weak.lock();
    if (!self) return;
    {
      absl::MutexLock lock(&self->mu_);
      --self->next_pending_;
    }
    if (!r.ok()) return self->Fail(r.status());
    if (!r->has_forward() || r->forward().step() != step) {
      return self->Fail(absl::InternalError(absl::StrCat(
          "next hop answered step ", r->has_forward() ? r->forward().step() : 0,
          " for step ", step)));
    }
    timing.set_total_ms(MillisSince(received));
    // Our timing first: timings are in route order.
    auto* timings = r->mutable_forward()->mutable_timings();
    timings->Add()->Swap(&timing);
    for (int i = timings->size() - 1; i > 0; --i)
      timings->SwapElements(i, i - 1);
    self->Respond(*r);
    self->MaybeFinishIdle();
  });
}

void SessionHandler::OnClientDone() {
  {
    absl::MutexLock lock(&mu_);
    client_done_ = true;
  }
  MaybeFinishIdle();
}

void SessionHandler::MaybeFinishIdle() {
  {
    absl::MutexLock lock(&mu_);
    if (!client_done_ || computing_ || !queue_.empty() || next_pending_ > 0 ||
        next_answer_ < next_seq_) {
      return;
    }
  }
  Fail(absl::OkStatus());
}

void SessionHandler::Respond(const v1::StageResponse& response) {
  absl::MutexLock lock(&mu_);
  if (finished_ || transport_ == nullptr) return;
  transport_->Send(response);
}

std::shared_ptr<NextHop> SessionHandler::EndLocked() {
  if (job_ && !finished_) {
    job_->LeaveBarriers(training_prefix_);
    // Its micro-batches in flight will never see their backward. (The
    // gradients it already accumulated stay in the shard until the job's
    // next update or restore: a device resuming restores; another device
    // of the job stepping first would include them.)
    job_->Submit(
        [job = job_, prefix = training_prefix_] { job->AbortSession(prefix); });
  }
  finished_ = true;
  queue_.clear();
  if (!computing_) {
    // No batch holds the cache: free it now, not when the stream's last
    // reference goes (else OnComputed frees it when the step returns).
    cache_.reset();
    stage_.reset();
  }
  return std::move(next_);
}

void SessionHandler::Fail(const absl::Status& status) {
  std::shared_ptr<NextHop> next;
  {
    absl::MutexLock lock(&mu_);
    if (finished_) return;
    next = EndLocked();
    if (transport_ != nullptr) transport_->Finish(status);
  }
  if (next) next->Close();
}

void SessionHandler::Cancel(const absl::Status& status) { Fail(status); }

void SessionHandler::OnDone() {
  std::shared_ptr<NextHop> next;
  {
    absl::MutexLock lock(&mu_);
    transport_ = nullptr;
    next = EndLocked();
  }
  if (next) next->Close();
}

}  // namespace edgesplit
