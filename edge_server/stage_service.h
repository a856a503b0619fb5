// gRPC glue of the stage service: a callback-API reactor per Session
// stream feeding a SessionHandler, the Handshake RPC, and the bookkeeping
// that shutdown and idle expiry need. Service logic lives in
// SessionHandler.
#ifndef EDGESPLIT_EDGE_SERVER_STAGE_SERVICE_H_
#define EDGESPLIT_EDGE_SERVER_STAGE_SERVICE_H_

#include <atomic>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "edge_server/admission.h"
#include "edge_server/session_handler.h"
#include "edgesplit/v1/stage.grpc.pb.h"

namespace edgesplit {

// Thread-safe.
class StageServiceImpl final : public v1::StageService::CallbackService {
 public:
  explicit StageServiceImpl(SessionEnv env, AdmissionLimits limits = {});
  ~StageServiceImpl() override;

  grpc::ServerUnaryReactor* Handshake(grpc::CallbackServerContext* ctx,
                                      const v1::HandshakeRequest* request,
                                      v1::HandshakeResponse* response) override;
  grpc::ServerBidiReactor<v1::StageRequest, v1::StageResponse>* Session(
      grpc::CallbackServerContext* ctx) override;
  grpc::ServerUnaryReactor* Probe(grpc::CallbackServerContext* ctx,
                                  const v1::ProbeRequest* request,
                                  v1::ProbeResponse* response) override;

  // Shutdown, phase 1: new sessions are refused (UNAVAILABLE); open ones
  // continue.
  void StopAccepting();
  // Phase 2: waits until no session is open or `deadline` passes; returns
  // how many are still open.
  int WaitForSessions(absl::Time deadline);
  // Phase 3: ends the remaining sessions with `status`.
  void CancelAll(const absl::Status& status);
  // Ends sessions idle for longer than `idle`; returns how many.
  int ExpireIdle(absl::Duration idle);
  int open_sessions() const;
  // Answers queued on all streams and not yet on the wire, now and at
  // most since start (bytes).
  int64_t unsent_bytes() const { return unsent_bytes_.load(); }
  int64_t peak_unsent_bytes() const { return peak_unsent_bytes_.load(); }
  const AdmissionLimits& limits() const { return limits_; }

  // Reactor bookkeeping (called by the reactors). Add refuses a stream
  // beyond the limits.
  absl::Status Add(const std::shared_ptr<SessionHandler>& handler,
                   const Peer& caller);
  void Remove(const SessionHandler* handler);
  void AddUnsent(int64_t bytes);

 private:
  // OK when the caller is authenticated (always, in insecure mode).
  absl::Status CheckCaller(const grpc::ServerContextBase& ctx) const;

  SessionEnv env_;
  const AdmissionLimits limits_;
  std::atomic<int64_t> unsent_bytes_{0};
  std::atomic<int64_t> peak_unsent_bytes_{0};
  mutable absl::Mutex mu_;
  // The device of each stream a device opened, and their counts.
  std::map<const SessionHandler*, std::string> device_of_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> per_device_ ABSL_GUARDED_BY(mu_);
  bool accepting_ ABSL_GUARDED_BY(mu_) = true;
  std::map<const SessionHandler*, std::weak_ptr<SessionHandler>> sessions_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace edgesplit

#endif  // EDGESPLIT_EDGE_SERVER_STAGE_SERVICE_H_
