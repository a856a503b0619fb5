#include "edge_server/stage_service.h"

#include <deque>

#include "edge_server/inference_session.h"
#include "proto/grpc_status.h"
#include "proto/probe.h"
#include "proto/tensor_codec.h"

namespace edgesplit {
namespace {

// Requests of one stream read and not yet answered: the server reads no
// more until one is answered. Below InferenceSession's pending limit, so a
// client pipelining its requests is slowed, never ended.
constexpr int kMaxUnansweredRequests = static_cast<int>(kMaxPendingRequests);

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
    max_unsent_bytes_ = service_->limits().max_unsent_bytes;
    StartRead(&request_);
  }

  // SessionTransport.
  void Send(const v1::StageResponse& response) override {
    absl::MutexLock lock(&mu_);
    if (finishing_) return;
    const int64_t bytes = static_cast<int64_t>(response.ByteSizeLong());
    writes_.push_back({response, bytes});
    AddUnsentLocked(bytes);
    if (unanswered_ > 0) --unanswered_;
    MaybeResumeReadingLocked();
    if (!writing_) {
      writing_ = true;
      StartWrite(&writes_.front().response);
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
      DropUnsentLocked(1);
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
    {
      absl::MutexLock lock(&mu_);
      ++unanswered_;  // Every request gets one answer (or ends the stream).
    }
    handler_->OnRequest(request_);
    absl::MutexLock lock(&mu_);
    if (finishing_) return;
    if (!MayReadLocked()) {
      // The client sends faster than it is answered, or does not read its
      // answers: read its next request once they are out (Send,
      // OnWriteDone), so neither its requests nor its answers pile up here
      // (and a pipelining client never meets a session's pending limit).
      read_paused_ = true;
      return;
    }
    StartRead(&request_);
  }
  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    AddUnsentLocked(-writes_.front().bytes);
    writes_.pop_front();
    if (!ok) {
      DropUnsentLocked(0);
      writing_ = false;
      if (!finishing_) {
        finishing_ = true;
        final_ = grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed");
      }
      FinishLocked();
      return;
    }
    MaybeResumeReadingLocked();
    if (!writes_.empty()) {
      StartWrite(&writes_.front().response);
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
    {
      absl::MutexLock lock(&mu_);
      DropUnsentLocked(0);
    }
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
  bool MayReadLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return unsent_bytes_ <= max_unsent_bytes_ &&
           unanswered_ < kMaxUnansweredRequests;
  }
  void MaybeResumeReadingLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (read_paused_ && !finishing_ && MayReadLocked()) {
      read_paused_ = false;
      StartRead(&request_);
    }
  }
  void AddUnsentLocked(int64_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    unsent_bytes_ += bytes;
    service_->AddUnsent(bytes);
  }
  // Forgets the answers queued after the first `keep`.
  void DropUnsentLocked(size_t keep) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    while (writes_.size() > keep) {
      AddUnsentLocked(-writes_.back().bytes);
      writes_.pop_back();
    }
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
  struct Unsent {
    v1::StageResponse response;
    int64_t bytes;
  };
  std::deque<Unsent> writes_ ABSL_GUARDED_BY(mu_);
  int64_t unsent_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t max_unsent_bytes_ = 0;  // Set before the first read.
  bool read_paused_ ABSL_GUARDED_BY(mu_) = false;
  int unanswered_ ABSL_GUARDED_BY(mu_) = 0;  // Requests read, not answered.
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

void StageServiceImpl::AddUnsent(int64_t bytes) {
  const int64_t now = unsent_bytes_.fetch_add(bytes) + bytes;
  int64_t peak = peak_unsent_bytes_.load();
  while (now > peak && !peak_unsent_bytes_.compare_exchange_weak(peak, now)) {
  }
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
