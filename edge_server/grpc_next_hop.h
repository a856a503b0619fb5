// NextHop over gRPC: a StageService.Session stream per session, on one
// channel per next-hop address.
#ifndef EDGESPLIT_EDGE_SERVER_GRPC_NEXT_HOP_H_
#define EDGESPLIT_EDGE_SERVER_GRPC_NEXT_HOP_H_

#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "edge_server/next_hop.h"
#include "edgesplit/v1/stage.grpc.pb.h"

namespace edgesplit {

// Thread-safe.
class GrpcNextHopFactory : public NextHopFactory {
 public:
  // Messages up to `max_message_bytes` in both directions (the servers'
  // own limit, so full-prompt outputs pass between hops).
  explicit GrpcNextHopFactory(int max_message_bytes)
      : max_message_bytes_(max_message_bytes) {}

  absl::StatusOr<std::unique_ptr<NextHop>> Open(const v1::OpenSession& open,
                                                absl::Time deadline) override;

 private:
  v1::StageService::Stub* Stub(const std::string& address);

  const int max_message_bytes_;
  absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<v1::StageService::Stub>> stubs_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace edgesplit

#endif  // EDGESPLIT_EDGE_SERVER_GRPC_NEXT_HOP_H_
