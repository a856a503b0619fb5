// Health of the daemons' gRPC ports (grpc.health.v1): each daemon serves
// the standard health service on its own port, answering SERVING once it
// can do its work (an edge server: its last plan update loaded every
// stage) and NOT_SERVING while it drains, so gRPC load balancers and
// tools stop sending it new work. The port speaks mutual TLS: Kubernetes'
// own gRPC probes (plaintext) cannot use it; they use the HTTP port's
// /readyz (ops/ops_http.h).
#ifndef EDGESPLIT_PROTO_HEALTH_H_
#define EDGESPLIT_PROTO_HEALTH_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/server.h"

namespace edgesplit {

// Makes every gRPC server built after it serve grpc.health.v1.Health
// (gRPC's built-in service; process-wide, once). Call before the
// ServerBuilder; thread-safe.
void EnableHealthService();

// Sets the server's status (service "", the server as a whole: the only
// one registered). No-op for a server built without EnableHealthService().
// Thread-safe.
void SetServing(grpc::Server* server, bool serving);

// Asks the health service behind `channel` whether `service` ("" = the
// server as a whole) is SERVING (true) or not (false); errors as the call
// failed (UNIMPLEMENTED without a health service).
absl::StatusOr<bool> CheckServing(const std::shared_ptr<grpc::Channel>& channel,
                                  absl::Duration timeout,
                                  const std::string& service = "");

}  // namespace edgesplit

#endif  // EDGESPLIT_PROTO_HEALTH_H_
