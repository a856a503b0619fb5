#include "proto/health.h"

#include "absl/base/call_once.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/client_context.h"
#include "grpcpp/health_check_service_interface.h"
#include "proto/grpc_status.h"

namespace edgesplit {

void EnableHealthService() {
  // gRPC's switch is a plain global, read by BuildAndStart: set it once.
  static absl::once_flag once;
  absl::call_once(once, [] { grpc::EnableDefaultHealthCheckService(true); });
}

void SetServing(grpc::Server* server, bool serving) {
  if (server == nullptr) return;
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  if (health != nullptr) health->SetServingStatus(serving);
}

absl::StatusOr<bool> CheckServing(const std::shared_ptr<grpc::Channel>& channel,
                                  absl::Duration timeout,
                                  const std::string& service) {
  auto stub = grpc::health::v1::Health::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(ToChrono(absl::Now() + timeout));
  grpc::health::v1::HealthCheckRequest request;
  request.set_service(service);
  grpc::health::v1::HealthCheckResponse response;
  grpc::Status s = stub->Check(&ctx, request, &response);
  if (!s.ok()) return FromGrpcStatus(s, "health check");
  return response.status() == grpc::health::v1::HealthCheckResponse::SERVING;
}

}  // namespace edgesplit
