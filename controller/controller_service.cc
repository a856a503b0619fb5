#include "controller/controller_service.h"

#include "base/status_macros.h"
#include "proto/grpc_status.h"
#include "runtime/adapter_name.h"

namespace edgesplit {
namespace {

template <typename T>
grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* ctx,
                                absl::StatusOr<T> result, T* response) {
  auto* reactor = ctx->DefaultReactor();
  if (result.ok()) *response = *std::move(result);
  reactor->Finish(ToGrpcStatus(result.status()));
  return reactor;
}

template <typename T>
absl::StatusOr<T> Fail(const absl::StatusOr<Peer>& peer) {
  return peer.status();
}

// Streams the node's plans now and after every change until the client
// goes away or the deadline passes.
class PlanWatcher : public grpc::ServerWriteReactor<v1::PlanUpdate> {
 public:
  PlanWatcher(Controller* controller, std::string node)
      : controller_(controller), node_(std::move(node)) {
    id_ = controller_->Subscribe([this] { Push(); });
    Push();
  }

  void OnWriteDone(bool ok) override {
    absl::MutexLock lock(&mu_);
    writing_ = false;
    if (!ok) {
      FinishOnce(grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed"));
      return;
    }
    if (dirty_ && !finished_) WriteLocked();
  }
  void OnCancel() override {
    absl::MutexLock lock(&mu_);
    FinishOnce(grpc::Status::CANCELLED);
  }
  void OnDone() override {
    controller_->Unsubscribe(id_);
    delete this;
  }

 private:
  void Push() {
    absl::MutexLock lock(&mu_);
    dirty_ = true;
    if (!writing_ && !finished_) WriteLocked();
  }
  void WriteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // Coalesce: always send the latest state.
    dirty_ = false;
    update_ = controller_->PlansFor(node_);
    writing_ = true;
    StartWrite(&update_);
  }
  void FinishOnce(const grpc::Status& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (finished_) return;
    finished_ = true;
    Finish(s);
  }

  Controller* const controller_;
  const std::string node_;
  int id_ = 0;
  absl::Mutex mu_;
  v1::PlanUpdate update_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool dirty_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
};

// Finishes a refused call at once.
class Refused : public grpc::ServerWriteReactor<v1::PlanUpdate> {
 public:
  explicit Refused(const absl::Status& s) { Finish(ToGrpcStatus(s)); }
  void OnDone() override { delete this; }
};

}  // namespace

ControllerServiceImpl::ControllerServiceImpl(Controller* controller,
                                             const TransportSecurity* security)
    : controller_(controller),
      security_(security),
      averager_(controller->config().fed_memory_bytes, "fed_memory_mb",
                controller->config().fed_selection) {
  if (security_->tokens() != nullptr) {
    // The controller's own key, already checked when it was loaded.
    const absl::Status s =
        security_->tokens()->SetPublicKey(controller_->grant_public_key());
    if (!s.ok()) std::abort();
  }
}

absl::StatusOr<Peer> ControllerServiceImpl::Authenticated(
    grpc::CallbackServerContext* ctx) const {
  ES_ASSIGN_OR_RETURN(Peer peer, security_->PeerOf(*ctx));
  ES_RETURN_IF_ERROR(controller_->CheckToken(peer));
  return peer;
}

absl::StatusOr<Peer> ControllerServiceImpl::Caller(
    grpc::CallbackServerContext* ctx, Identity::Kind kind,
    const std::string* name, const char* action) const {
  ES_ASSIGN_OR_RETURN(Peer peer, Authenticated(ctx));
  if (name != nullptr) {
    ES_RETURN_IF_ERROR(CheckPeerNamed(peer, kind, *name));
  } else {
    ES_RETURN_IF_ERROR(CheckPeerKind(peer, kind, action));
  }
  return peer;
}

grpc::ServerUnaryReactor* ControllerServiceImpl::RegisterNode(
    grpc::CallbackServerContext* ctx, const v1::RegisterNodeRequest* request,
    v1::RegisterNodeResponse* response) {
  auto peer = Caller(ctx, Identity::Kind::kNode, &request->node(), "");
  if (!peer.ok())
    return Reply(ctx, Fail<v1::RegisterNodeResponse>(peer), response);
  return Reply(ctx, controller_->RegisterNode(*request), response);
}

grpc::ServerUnaryReactor* ControllerServiceImpl::Heartbeat(
    grpc::CallbackServerContext* ctx, const v1::HeartbeatRequest* request,
    v1::HeartbeatResponse* response) {
  auto peer = Caller(ctx, Identity::Kind::kNode, &request->node(), "");
  if (!peer.ok())
    return Reply(ctx, Fail<v1::HeartbeatResponse>(peer), response);
  return Reply(ctx, controller_->Heartbeat(*request), response);
}

grpc::ServerUnaryReactor* ControllerServiceImpl::GetPlan(
    grpc::CallbackServerContext* ctx, const v1::GetPlanRequest* request,
    v1::GetPlanResponse* response) {
  auto peer = Authenticated(ctx);
  if (!peer.ok()) return Reply(ctx, Fail<v1::GetPlanResponse>(peer), response);
  return Reply(ctx, controller_->GetPlan(request->model_id()), response);
}

grpc::ServerWriteReactor<v1::PlanUpdate>* ControllerServiceImpl::WatchPlan(
    grpc::CallbackServerContext* ctx, const v1::WatchPlanRequest* request) {
  auto peer = Caller(ctx, Identity::Kind::kNode, &request->node(), "");
  if (!peer.ok()) return new Refused(peer.status());
  return new PlanWatcher(controller_, request->node());
}

grpc::ServerUnaryReactor* ControllerServiceImpl::OpenSession(
    grpc::CallbackServerContext* ctx, const v1::OpenSessionRequest* request,
    v1::OpenSessionResponse* response) {
  auto peer = Caller(ctx, Identity::Kind::kDevice, nullptr, "open sessions");
  if (!peer.ok())
    return Reply(ctx, Fail<v1::OpenSessionResponse>(peer), response);
  if (!peer->authenticated) {
    auto opened = controller_->OpenSession(*request);
    if (opened.ok()) CountOpened(*request);
    return Reply(ctx, std::move(opened), response);
  }
  // The certified name, whatever the request says.
  v1::OpenSessionRequest named = *request;
  named.set_device(peer->identity.name);
  auto opened = controller_->OpenSession(named);
  if (opened.ok()) CountOpened(named);
  return Reply(ctx, std::move(opened), response);
}

void ControllerServiceImpl::CountOpened(
    const v1::OpenSessionRequest& request) const {
  // Training sessions train their own adapter; the base needs no caching.
  if (demand_ == nullptr || !request.training_job().empty() ||
      request.adapter().empty() ||
      !ValidateAdapterName(request.adapter()).ok()) {
    return;
  }
  demand_->Record(request.model_id(), request.adapter(), absl::Now());
}

grpc::ServerUnaryReactor* ControllerServiceImpl::CloseSession(
    grpc::CallbackServerContext* ctx, const v1::CloseSessionRequest* request,
    v1::CloseSessionResponse* response) {
  auto peer = Caller(ctx, Identity::Kind::kDevice, nullptr, "close sessions");
  if (!peer.ok())
    return Reply(ctx, Fail<v1::CloseSessionResponse>(peer), response);
  absl::Status s = controller_->CloseSession(*request);
  return Reply(ctx,
               s.ok() ? absl::StatusOr<v1::CloseSessionResponse>(
                            v1::CloseSessionResponse())
                      : absl::StatusOr<v1::CloseSessionResponse>(s),
               response);
}

grpc::ServerUnaryReactor* ControllerServiceImpl::ReloadPlans(
    grpc::CallbackServerContext* ctx, const v1::ReloadPlansRequest* request,
    v1::ReloadPlansResponse* response) {
  (void)request;
  auto peer = Caller(ctx, Identity::Kind::kAdmin, nullptr, "reload plans");
  if (!peer.ok())
    return Reply(ctx, Fail<v1::ReloadPlansResponse>(peer), response);
  return Reply(
      ctx, absl::StatusOr<v1::ReloadPlansResponse>(controller_->ReloadPlans()),
      response);
}

grpc::ServerUnaryReactor* ControllerServiceImpl::Drain(
    grpc::CallbackServerContext* ctx, const v1::DrainRequest* request,
    v1::DrainResponse* response) {
  auto peer = Authenticated(ctx);
  if (peer.ok() &&
      !(peer->authenticated && peer->identity.kind == Identity::Kind::kAdmin)) {
    absl::Status s =
        CheckPeerNamed(*peer, Identity::Kind::kNode, request->node());
    if (!s.ok()) peer = s;
  }
  if (!peer.ok()) return Reply(ctx, Fail<v1::DrainResponse>(peer), response);
  absl::Status s = controller_->Drain(request->node());
  return Reply(ctx,
               s.ok() ? absl::StatusOr<v1::DrainResponse>(v1::DrainResponse())
                      : absl::StatusOr<v1::DrainResponse>(s),
               response);
}

grpc::ServerUnaryReactor* ControllerServiceImpl::GetClusterStatus(
    grpc::CallbackServerContext* ctx,
    const v1::GetClusterStatusRequest* request, v1::ClusterStatus* response) {
  (void)request;
  auto peer = Authenticated(ctx);
  if (!peer.ok()) return Reply(ctx, Fail<v1::ClusterStatus>(peer), response);
  return Reply(ctx,
               absl::StatusOr<v1::ClusterStatus>(controller_->ClusterStatus()),
               response);
}

grpc::ServerUnaryReactor* ControllerServiceImpl::AverageAdapters(
    grpc::CallbackServerContext* ctx, const v1::AverageAdaptersRequest* request,
    v1::AverageAdaptersResponse* response) {
  auto peer = Caller(ctx, Identity::Kind::kDevice, &request->device(), "");
  if (!peer.ok()) {
    return Reply(ctx, Fail<v1::AverageAdaptersResponse>(peer), response);
  }
  // Only the job's devices join its rounds.
  if (absl::Status m =
          controller_->CheckJobMember(request->job_id(), request->device());
      !m.ok()) {
    return Reply(ctx, absl::StatusOr<v1::AverageAdaptersResponse>(m), response);
  }
  auto* reactor = ctx->DefaultReactor();
  // A round waits for its slowest device, but never past the caller's
  // deadline (nor fed_round_timeout_s: what it holds stays bounded in time).
  const absl::Time deadline =
      std::min(absl::FromChrono(ctx->deadline()),
               absl::Now() + controller_->config().fed_round_timeout);
  averager_.Submit(
      *request, deadline,
      [reactor, response](absl::StatusOr<v1::AverageAdaptersResponse> r) {
        if (r.ok()) *response = *std::move(r);
        reactor->Finish(ToGrpcStatus(r.status()));
      });
  return reactor;
}

}  // namespace edgesplit
