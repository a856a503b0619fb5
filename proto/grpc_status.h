// The one place absl::Status and grpc::Status convert (gRPC glue only).
#ifndef EDGESPLIT_PROTO_GRPC_STATUS_H_
#define EDGESPLIT_PROTO_GRPC_STATUS_H_

#include <chrono>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/support/status.h"

namespace edgesplit {

grpc::Status ToGrpcStatus(const absl::Status& status);
// `context` (e.g. "hop server-b (127.0.0.1:5001)") prefixes the message.
absl::Status FromGrpcStatus(const grpc::Status& status,
                            absl::string_view context = "");

// Deadlines: gRPC uses std::chrono::system_clock.
std::chrono::system_clock::time_point ToChrono(absl::Time t);
absl::Time FromChrono(std::chrono::system_clock::time_point t);

}  // namespace edgesplit

#endif  // EDGESPLIT_PROTO_GRPC_STATUS_H_
