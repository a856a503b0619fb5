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
#include "proto/stage_stream.h"

namespace edgesplit {

// Thread-safe.
class GrpcNextHopFactory : public NextHopFactory {
 public:
  // Messages up to `max_message_bytes` in both directions (the servers'
  // own limit, so full-prompt outputs pass between hops); the next hop
  // must prove it is the node the route names.
  GrpcNextHopFactory(int max_message_bytes,
                     std::shared_ptr<const TransportSecurity> security)
      : stubs_(max_message_bytes, std::move(security)) {}

  absl::StatusOr<std::unique_ptr<NextHop>> Open(const v1::OpenSession& open,
                                                absl::Time deadline) override;

 private:
  StageStubCache stubs_;
};

}  // namespace edgesplit

#endif  // EDGESPLIT_EDGE_SERVER_GRPC_NEXT_HOP_H_
