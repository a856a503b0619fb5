#include "edge_server/stage_service.h"

#include <deque>

#include "proto/grpc_status.h"
#include "proto/probe.h"
#include "proto/tensor_codec.h"

namespace edgesplit {
namespace {

class SessionReactor
    : public grpc::ServerBidiReactor<v1::StageRequest, v1::StageResponse>,
      public SessionTransport {
 public:
  SessionReactor(StageServiceImpl* service, const SessionEnv& env,
                 grpc::CallbackServerContext* ctx, bool accepting)
      : service_(service) {
    if (!accepting) {
      Refuse(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "server is shutting down"));
      return;
    }
    Peer caller;
    if (env.security != nullptr) {
      auto peer = env.security->PeerOf(*ctx);
      if (!peer.ok()) {
        Refuse(ToGrpcStatus(peer.status()));
        return;
      }
      caller = *std::move(peer);
    }
    auto handler = std::make_shared<SessionHandler>(
        env, this, FromChrono(ctx->deadline()), caller);
    if (absl::Status admitted = service_->Add(handler, caller);
        !admitted.ok()) {
      Refuse(ToGrpcStatus(admitted));
      return;
    }
    handler_ = std::move(handler);
    StartRead(&request_);
  }

  // SessionTransport.
  void Send(const v1::StageResponse& response) override {
    absl::MutexLock lock(&mu_);
    if (finishing_) return;
    writes_.push_back(response);
    if (!writing_) {
      writing_ = true;
      StartWrite(&writes_.front());
    }
  }
  void Finish(const absl::Status& status) override {
    absl::MutexLock lock(&mu_);
    if (finishing_) return;
    finishing_ = true;
    final_ = ToGrpcStatus(status);
    if (!status.ok() && writes_.size() > 1) {
      // An error ends the session now: drop answers not yet on the wire
      // (keep the one in flight; gRPC owns it until OnWriteDone).
      writes_.erase(writes_.begin() + 1, writes_.end());
    }
    // Responses already queued go out first.
    if (!writing_) FinishLocked();
  }

  // grpc::ServerBidiReactor.
  void OnReadDone(bool ok) override {
    if (!ok) {
      // The client half-closed (or the stream broke; OnCancel/OnDone
      // follow): finish once the answers in flight are out.
      handler_->OnClientDone();
      return;
    }
    handler_->OnRequest(request_);
    absl::MutexLock lock(&mu_);
    if (!finishing_) StartRead(&request_);
  }
  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writes_.pop_front();
    if (!ok) {
      writes_.clear();
      writing_ = false;
      if (!finishing_) {
        finishing_ = true;
        final_ = grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed");
      }
      FinishLocked();
      return;
    }
    if (!writes_.empty()) {
      StartWrite(&writes_.front());
    } else {
      writing_ = false;
      if (finishing_) FinishLocked();
    }
  }
  void OnCancel() override {
    if (handler_) handler_->OnDone();
    // The handler no longer answers; gRPC still needs Finish() before it
    // runs OnDone.
    Finish(absl::CancelledError("session cancelled"));
  }
  void OnDone() override {
    if (handler_) {
      handler_->OnDone();
      service_->Remove(handler_.get());
    }
    delete this;
  }

 private:
  // Ends a stream refused before it has a handler. Through the same
  // once-only path as every other finish: a client cancelling it now
  // calls OnCancel, which must not finish it a second time.
  void Refuse(const grpc::Status& status) {
    absl::MutexLock lock(&mu_);
    finishing_ = true;
    final_ = status;
    FinishLocked();
  }
  void FinishLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finish_called_) return;
    finish_called_ = true;
    grpc::ServerBidiReactor<v1::StageRequest, v1::StageResponse>::Finish(
        final_);
  }

  StageServiceImpl* const service_;
  std::shared_ptr<SessionHandler> handler_;
  v1::StageRequest request_;
  absl::Mutex mu_;
  std::deque<v1::StageResponse> writes_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;
  bool finish_called_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

StageServiceImpl::StageServiceImpl(SessionEnv env, AdmissionLimits limits)
    : env_(env), limits_(limits) {}

StageServiceImpl::~StageServiceImpl() = default;

absl::Status StageServiceImpl::CheckCaller(
    const grpc::ServerContextBase& ctx) const {
  if (env_.security == nullptr) return absl::OkStatus();
  return env_.security->PeerOf(ctx).status();
}

grpc::ServerUnaryReactor* StageServiceImpl::Handshake(
    grpc::CallbackServerContext* ctx, const v1::HandshakeRequest* request,
    v1::HandshakeResponse* response) {
  (void)request;
  auto* reactor = ctx->DefaultReactor();
  // Callers without a certificate (device tokens) must still prove who
  // they are before this server answers anything.
  if (absl::Status who = CheckCaller(*ctx); !who.ok()) {
    reactor->Finish(ToGrpcStatus(who));
    return reactor;
  }
  response->set_protocol_version(kProtocolVersion);
  for (v1::Codec c : wire::SupportedCodecs()) response->add_codecs(c);
  response->add_architectures("gpt2");
  response->add_architectures("llama");
  response->set_node(env_.host->node());
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* StageServiceImpl::Probe(
    grpc::CallbackServerContext* ctx, const v1::ProbeRequest* request,
    v1::ProbeResponse* response) {
  auto* reactor = ctx->DefaultReactor();
  if (absl::Status who = CheckCaller(*ctx); !who.ok()) {
    reactor->Finish(ToGrpcStatus(who));
    return reactor;
  }
  if (request->response_bytes() > kMaxProbeResponseBytes) {
    reactor->Finish(grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("Probe: response_bytes ", request->response_bytes(),
                     " exceeds ", kMaxProbeResponseBytes)));
    return reactor;
  }
  response->mutable_payload()->assign(request->response_bytes(), '\0');
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerBidiReactor<v1::StageRequest, v1::StageResponse>*
StageServiceImpl::Session(grpc::CallbackServerContext* ctx) {
  bool accepting;
  {
    absl::MutexLock lock(&mu_);
    accepting = accepting_;
  }
  return new SessionReactor(this, env_, ctx, accepting);
}

absl::Status StageServiceImpl::Add(
    const std::shared_ptr<SessionHandler>& handler, const Peer& caller) {
  const bool by_device =
      caller.authenticated && caller.identity.kind == Identity::Kind::kDevice;
  absl::MutexLock lock(&mu_);
  if (static_cast<int>(sessions_.size()) >= limits_.max_sessions) {
    return absl::ResourceExhaustedError(
        absl::StrCat("server ", env_.host->node(), " holds ", sessions_.size(),
                     " sessions, its max_sessions"));
  }
  if (by_device) {
    int& n = per_device_[caller.identity.name];
    if (n >= limits_.max_sessions_per_device) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "server ", env_.host->node(), " holds ", n, " sessions of device \"",
          caller.identity.name, "\", its max_sessions_per_device"));
    }
    ++n;
    device_of_[handler.get()] = caller.identity.name;
  }
  sessions_[handler.get()] = handler;
  return absl::OkStatus();
}

void StageServiceImpl::Remove(const SessionHandler* handler) {
  absl::MutexLock lock(&mu_);
  sessions_.erase(handler);
  auto it = device_of_.find(handler);
  if (it != device_of_.end()) {
    if (--per_device_[it->second] <= 0) per_device_.erase(it->second);
    device_of_.erase(it);
  }
}

void StageServiceImpl::StopAccepting() {
  absl::MutexLock lock(&mu_);
  accepting_ = false;
}

int StageServiceImpl::open_sessions() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(sessions_.size());
}

int StageServiceImpl::WaitForSessions(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  mu_.AwaitWithDeadline(
      absl::Condition(
          +[](std::map<const SessionHandler*, std::weak_ptr<SessionHandler>>*
                  s) { return s->empty(); },
          &sessions_),
      deadline);
  return static_cast<int>(sessions_.size());
}

void StageServiceImpl::CancelAll(const absl::Status& status) {
  std::vector<std::shared_ptr<SessionHandler>> open;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [p, weak] : sessions_) {
      if (auto s = weak.lock()) open.push_back(std::move(s));
    }
  }
  for (auto& s : open) s->Cancel(status);
}

int StageServiceImpl::ExpireIdle(absl::Duration idle) {
  std::vector<std::shared_ptr<SessionHandler>> stale;
  const absl::Time cutoff = absl::Now() - idle;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [p, weak] : sessions_) {
      auto s = weak.lock();
      if (s && s->last_activity() < cutoff) stale.push_back(std::move(s));
    }
  }
  for (auto& s : stale) {
    s->Cancel(absl::DeadlineExceededError("session expired after being idle"));
  }
  return static_cast<int>(stale.size());
}

}  // namespace edgesplit
