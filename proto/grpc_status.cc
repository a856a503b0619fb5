#include "proto/grpc_status.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "security/tls.h"

namespace edgesplit {

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  // absl::StatusCode and grpc::StatusCode share their numbering.
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status,
                            absl::string_view context) {
  if (status.ok()) return absl::OkStatus();
  std::string msg = context.empty()
                        ? status.error_message()
                        : absl::StrCat(context, ": ", status.error_message());
  return ExplainHandshakeFailure(
      absl::Status(static_cast<absl::StatusCode>(status.error_code()), msg));
}

std::chrono::system_clock::time_point ToChrono(absl::Time t) {
  if (t == absl::InfiniteFuture())
    return std::chrono::system_clock::time_point::max();
  return absl::ToChronoTime(t);
}

absl::Time FromChrono(std::chrono::system_clock::time_point t) {
  if (t == std::chrono::system_clock::time_point::max()) {
    return absl::InfiniteFuture();
  }
  return absl::FromChrono(t);
}

}  // namespace edgesplit
