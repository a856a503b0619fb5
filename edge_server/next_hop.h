// The seam between a stage and the server after it: a session's stream to
// the next hop. The gRPC implementation (grpc_next_hop.h) opens a
// StageService.Session stream; tests substitute an in-process fake.
#ifndef EDGESPLIT_EDGE_SERVER_NEXT_HOP_H_
#define EDGESPLIT_EDGE_SERVER_NEXT_HOP_H_

#include <functional>
#include <memory>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "edgesplit/v1/stage.pb.h"

namespace edgesplit {

// One session's connection to the next hop. Thread-safe.
class NextHop {
 public:
  using Callback = std::function<void(absl::StatusOr<v1::StageResponse>)>;
  virtual ~NextHop() = default;

  // Sends `request`; `done` receives its response (responses arrive in
  // request order). After a failure every later call fails too; errors
  // name the next hop's node.
  virtual void Send(v1::StageRequest request, Callback done) = 0;
  // Ends the stream (the next hop frees the session) and cancels what is
  // in flight.
  virtual void Close() = 0;
};

// Opens next-hop streams. Thread-safe.
class NextHopFactory {
 public:
  virtual ~NextHopFactory() = default;
  // Opens a stream to the node `open` routes to first (route[0]); the
  // stream inherits `deadline`. It sends nothing: the caller's first
  // request on it must be `open` itself.
  virtual absl::StatusOr<std::unique_ptr<NextHop>> Open(
      const v1::OpenSession& open, absl::Time deadline) = 0;
};

}  // namespace edgesplit

#endif  // EDGESPLIT_EDGE_SERVER_NEXT_HOP_H_
