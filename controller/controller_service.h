// gRPC glue of the controller (callback API). Logic lives in Controller
// and FedAverager.
#ifndef EDGESPLIT_CONTROLLER_CONTROLLER_SERVICE_H_
#define EDGESPLIT_CONTROLLER_CONTROLLER_SERVICE_H_

#include "controller/adapter_placement.h"
#include "controller/controller.h"
#include "controller/fed_average.h"
#include "edgesplit/v1/controller.grpc.pb.h"
#include "security/tls.h"

namespace edgesplit {

// Who may call what (checked against the caller's certificate; with an
// insecure transport every caller is trusted):
//   RegisterNode, Heartbeat, WatchPlan   the node named in the request
//   OpenSession, CloseSession            devices
//   AverageAdapters                      the device named in the request,
//                                        a member of the job
//   ReloadPlans                          admins
//   Drain                                the node named, or admins
//   GetPlan, GetClusterStatus            anyone of the cluster
// Devices may also authenticate with a bearer token (security/token.h)
// unless the controller's revoked_tokens lists it.
// A device's OpenSession `device` field is overwritten with its certified
// name, and its `suspects` count only from devices. A training job belongs
// to the device that opened it first and the members it named.
//
// Thread-safe. `controller` and `security` must outlive the service.
class ControllerServiceImpl final
    : public v1::ControllerService::CallbackService {
 public:
  // With device tokens on (tls.device_tokens), `controller`'s grant key
  // (loaded before) checks them.
  ControllerServiceImpl(Controller* controller,
                        const TransportSecurity* security);

  grpc::ServerUnaryReactor* RegisterNode(
      grpc::CallbackServerContext* ctx, const v1::RegisterNodeRequest* request,
      v1::RegisterNodeResponse* response) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* ctx,
                                      const v1::HeartbeatRequest* request,
                                      v1::HeartbeatResponse* response) override;
  grpc::ServerUnaryReactor* GetPlan(grpc::CallbackServerContext* ctx,
                                    const v1::GetPlanRequest* request,
                                    v1::GetPlanResponse* response) override;
  grpc::ServerWriteReactor<v1::PlanUpdate>* WatchPlan(
      grpc::CallbackServerContext* ctx,
      const v1::WatchPlanRequest* request) override;
  grpc::ServerUnaryReactor* OpenSession(
      grpc::CallbackServerContext* ctx, const v1::OpenSessionRequest* request,
      v1::OpenSessionResponse* response) override;
  grpc::ServerUnaryReactor* CloseSession(
      grpc::CallbackServerContext* ctx, const v1::CloseSessionRequest* request,
      v1::CloseSessionResponse* response) override;
  grpc::ServerUnaryReactor* ReloadPlans(
      grpc::CallbackServerContext* ctx, const v1::ReloadPlansRequest* request,
      v1::ReloadPlansResponse* response) override;
  grpc::ServerUnaryReactor* GetClusterStatus(
      grpc::CallbackServerContext* ctx,
      const v1::GetClusterStatusRequest* request,
      v1::ClusterStatus* response) override;
  grpc::ServerUnaryReactor* AverageAdapters(
      grpc::CallbackServerContext* ctx,
      const v1::AverageAdaptersRequest* request,
      v1::AverageAdaptersResponse* response) override;
  grpc::ServerUnaryReactor* Drain(grpc::CallbackServerContext* ctx,
                                  const v1::DrainRequest* request,
                                  v1::DrainResponse* response) override;

  // Fails averaging rounds whose deadline passed by `now` (the daemon's
  // tick; InfiniteFuture() at shutdown, so no call keeps it waiting).
  void ExpireRounds(absl::Time now) { averager_.Expire(now); }

  // Counts every inference session opened with an adapter in `demand`
  // (adapter placement's input). Call before serving; `demand` outlives
  // the service.
  void set_adapter_demand(AdapterDemand* demand) { demand_ = demand; }

 private:
  // The caller, if authenticated (and its token, if any, not revoked).
  absl::StatusOr<Peer> Authenticated(grpc::CallbackServerContext* ctx) const;
  // The caller, if it is `kind` and (with `name`) named so; else why not.
  absl::StatusOr<Peer> Caller(grpc::CallbackServerContext* ctx,
                              Identity::Kind kind, const std::string* name,
                              const char* action) const;

  // Counts the session `request` opened (adapter demand).
  void CountOpened(const v1::OpenSessionRequest& request) const;

  Controller* const controller_;
  const TransportSecurity* const security_;
  FedAverager averager_;
  AdapterDemand* demand_ = nullptr;  // Set before serving; not owned.
};

}  // namespace edgesplit

#endif  // EDGESPLIT_CONTROLLER_CONTROLLER_SERVICE_H_
