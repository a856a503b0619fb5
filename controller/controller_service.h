// gRPC glue of the controller (callback API). Logic lives in Controller
// and FedAverager.
#ifndef EDGESPLIT_CONTROLLER_CONTROLLER_SERVICE_H_
#define EDGESPLIT_CONTROLLER_CONTROLLER_SERVICE_H_

#include "controller/controller.h"
#include "controller/fed_average.h"
#include "edgesplit/v1/controller.grpc.pb.h"

namespace edgesplit {

// Thread-safe. `controller` must outlive the service.
class ControllerServiceImpl final
    : public v1::ControllerService::CallbackService {
 public:
  explicit ControllerServiceImpl(Controller* controller)
      : controller_(controller) {}

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

  // Fails averaging rounds whose deadline passed by `now` (the daemon's
  // tick; InfiniteFuture() at shutdown, so no call keeps it waiting).
  void ExpireRounds(absl::Time now) { averager_.Expire(now); }

 private:
  Controller* const controller_;
  FedAverager averager_;
};

}  // namespace edgesplit

#endif  // EDGESPLIT_CONTROLLER_CONTROLLER_SERVICE_H_
