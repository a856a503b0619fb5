// Client side of one StageService.Session stream (gRPC callback API):
// requests are written in order, responses matched to requests in order.
// Used by a server towards its next hop and by the device towards the
// first hop.
#ifndef EDGESPLIT_PROTO_STAGE_STREAM_H_
#define EDGESPLIT_PROTO_STAGE_STREAM_H_

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "edgesplit/v1/stage.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "security/tls.h"

namespace edgesplit {

// Thread-safe. Create with Start(); the stream lives until it ends (Close,
// deadline, error) even if the caller drops its reference.
class StageStream
    : public grpc::ClientBidiReactor<v1::StageRequest, v1::StageResponse>,
      public std::enable_shared_from_this<StageStream> {
 public:
  using Callback = std::function<void(absl::StatusOr<v1::StageResponse>)>;

  // `node` and `address` name the peer in errors.
  static std::shared_ptr<StageStream> Start(v1::StageService::Stub* stub,
                                            absl::Time deadline,
                                            std::string node,
                                            std::string address);

  // Sends `request`; `done` gets its response, or the stream's error. After
  // the stream ends every call fails at once.
  void Send(v1::StageRequest request, Callback done);
  // Half-closes and cancels whatever is in flight.
  void Close();
  // Blocks until the stream has ended; returns its final status.
  absl::Status Wait();

  // grpc::ClientBidiReactor.
  void OnWriteDone(bool ok) override;
  void OnReadDone(bool ok) override;
  void OnDone(const grpc::Status& status) override;

 private:
  StageStream(std::string node, std::string address)
      : node_(std::move(node)), address_(std::move(address)) {}
  std::string Context() const;
  // Releases the hold taken in Start() once: after Close(), or when the
  // peer ended the stream (a failed read or write). gRPC runs OnDone only
  // when no hold remains, so a stream the peer ended must release it too.
  void ReleaseHoldOnce();

  const std::string node_;
  const std::string address_;
  grpc::ClientContext ctx_;
  v1::StageResponse response_;         // Owned by the pending read.
  std::shared_ptr<StageStream> self_;  // Alive until OnDone.

  absl::Mutex mu_;
  std::deque<v1::StageRequest> writes_ ABSL_GUARDED_BY(mu_);
  std::deque<Callback> callbacks_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  bool hold_released_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status final_ ABSL_GUARDED_BY(mu_);
};

// A session's first request along `route` (the servers, in order;
// `return_hidden` for a U-shaped split). Callers add the adapter or the
// training spec.
v1::StageRequest OpenRequest(const std::string& session_id,
                             const std::string& model_id, v1::Codec codec,
                             const std::vector<v1::Hop>& route,
                             bool return_hidden);

// StageService stubs by address and node, one channel each, with message
// limits large enough for full-prompt activations; the server at the
// address must prove it is the node (its certificate). Thread-safe; stubs
// live as long as the cache.
class StageStubCache {
 public:
  StageStubCache(int max_message_bytes,
                 std::shared_ptr<const TransportSecurity> security)
      : max_message_bytes_(max_message_bytes), security_(std::move(security)) {}
  // Fails only when the transport refuses the address (insecure mode and
  // not loopback).
  absl::StatusOr<v1::StageService::Stub*> Get(const std::string& address,
                                              const std::string& node);

 private:
  const int max_message_bytes_;
  const std::shared_ptr<const TransportSecurity> security_;
  absl::Mutex mu_;
  std::map<std::pair<std::string, std::string>,
           std::unique_ptr<v1::StageService::Stub>>
      stubs_ ABSL_GUARDED_BY(mu_);
};

}  // namespace edgesplit

#endif  // EDGESPLIT_PROTO_STAGE_STREAM_H_
