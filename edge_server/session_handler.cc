#include "edge_server/session_handler.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "edge_server/inference_session.h"
#include "edge_server/training_job.h"
#include "edge_server/training_session.h"

namespace edgesplit {

absl::StatusOr<std::shared_ptr<ServerSession>> NewSession(
    const SessionEnv& env, SessionTransport* transport, absl::Time deadline,
    const v1::OpenSession& open) {
  auto hop = ValidateOpen(env, open);
  if (!hop.ok()) return hop.status();
  if (!open.has_training()) {
    if (absl::StartsWith(open.adapter(), "train:")) {
      return absl::InvalidArgumentError(absl::StrCat(
          "adapter \"", open.adapter(),
          "\" is a training job's (it changes while it trains): export it "
          "and load the PEFT adapter instead"));
    }
    if (!hop->adapter.empty()) {
      // This stage's part of the adapter, from memory or this server's
      // adapter directory (a miss reads it from disk on this thread).
      auto lora = hop->stage->adapters->Get(hop->adapter);
      if (!lora.ok()) {
        return absl::Status(
            lora.status().code(),
            absl::StrCat(env.host->node(), ": ", lora.status().message()));
      }
      hop->lora = *std::move(lora);
    }
    return std::make_shared<InferenceSession>(env, transport, deadline,
                                              *std::move(hop));
  }
  if (env.jobs == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(env.host->node(), " does not serve training sessions"));
  }
  if (hop->stage->model->spec().embedding) {
    return absl::FailedPreconditionError(
        "training needs the device to hold at least one block (this hop "
        "embeds: the plan gives the device zero blocks, so the training "
        "text would travel as token ids)");
  }
  if (hop->role == HopRole::kLastWithHead && open.return_hidden()) {
    return absl::InvalidArgumentError(
        "return_hidden with the LM head here: a U-shaped training route "
        "ends before the head");
  }
  auto job = env.jobs->Get(open.training(), open.model_id(), hop->stage);
  if (!job.ok()) return job.status();
  return std::make_shared<TrainingSession>(env, transport, deadline,
                                           *std::move(hop), *std::move(job));
}

SessionHandler::SessionHandler(const SessionEnv& env,
                               SessionTransport* transport, absl::Time deadline,
                               Peer caller)
    : env_(env),
      deadline_(deadline),
      caller_(std::move(caller)),
      transport_(transport) {}

std::shared_ptr<ServerSession> SessionHandler::session() const {
  absl::MutexLock lock(&mu_);
  return session_;
}

std::string SessionHandler::session_id() const {
  auto s = session();
  return s ? s->session_id() : "";
}

absl::Time SessionHandler::last_activity() const {
  auto s = session();
  return s ? s->last_activity() : created_;
}

void SessionHandler::OnRequest(const v1::StageRequest& request) {
  if (env_.request_tap) env_.request_tap(request);
  auto s = session();
  if (s) {
    if (s->Over()) return;
    s->Touch();
  }
  switch (request.kind_case()) {
    case v1::StageRequest::kOpen:
      if (s) {
        return s->End(absl::FailedPreconditionError("session is already open"));
      }
      return Open(request.open());
    case v1::StageRequest::kClose:
      if (s) return s->End(absl::OkStatus());
      return Finish(absl::OkStatus());
    case v1::StageRequest::KIND_NOT_SET:
      if (s) return s->End(absl::InvalidArgumentError("empty StageRequest"));
      return Finish(absl::InvalidArgumentError("empty StageRequest"));
    default:
      if (s) {
        s->Received(request);
        return s->OnRequest(request);
      }
      return Finish(absl::FailedPreconditionError(
          absl::StrCat(request.has_forward() ? "forward" : "request",
                       " before OpenSession")));
  }
}

void SessionHandler::Open(const v1::OpenSession& open) {
  SessionTransport* transport;
  {
    absl::MutexLock lock(&mu_);
    if (over_) return;
    transport = transport_;
  }
  if (env_.grants != nullptr) {
    absl::Status allowed = env_.grants->Check(open, env_.host->node(), caller_);
    if (!allowed.ok()) return Finish(allowed);
  }
  auto made = NewSession(env_, transport, deadline_, open);
  if (!made.ok()) return Finish(made.status());
  std::shared_ptr<ServerSession> s = *std::move(made);
  {
    absl::MutexLock lock(&mu_);
    if (over_) return;  // Cancelled or done while validating.
    session_ = s;
    // The session answers through the transport from now on; OnDone and
    // Cancel go to it.
  }
  s->Start(open);
}

void SessionHandler::Finish(const absl::Status& status) {
  absl::MutexLock lock(&mu_);
  if (over_ || session_ != nullptr) return;
  over_ = true;
  if (transport_ != nullptr) transport_->Finish(status);
}

void SessionHandler::OnClientDone() {
  if (auto s = session()) return s->OnClientDone();
  Finish(absl::OkStatus());  // Closed without opening.
}

void SessionHandler::Cancel(const absl::Status& status) {
  if (auto s = session()) return s->End(status);
  Finish(status);
}

void SessionHandler::OnDone() {
  std::shared_ptr<ServerSession> s;
  {
    absl::MutexLock lock(&mu_);
    over_ = true;
    transport_ = nullptr;
    s = session_;
  }
  if (s) s->OnDone();
}

}  // namespace edgesplit
