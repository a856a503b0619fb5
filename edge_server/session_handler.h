// The server side of one StageService.Session stream, apart from gRPC. The
// stream's first request must be an OpenSession: the handler validates it
// (session.h's ValidateOpen), makes an InferenceSession or, for an open
// with a training spec, a TrainingSession on the named job, and from then
// on hands it the stream's requests. A Close request, or the client's
// half-close once everything is answered, finishes the stream OK. The
// reactor glue (stage_service.cc) feeds the handler and carries its
// responses through SessionTransport.
#ifndef EDGESPLIT_EDGE_SERVER_SESSION_HANDLER_H_
#define EDGESPLIT_EDGE_SERVER_SESSION_HANDLER_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "edge_server/server_session.h"
#include "edgesplit/v1/stage.pb.h"
#include "proto/protocol.h"

namespace edgesplit {

// Validates `open` and makes the session it asks for (not yet started).
absl::StatusOr<std::shared_ptr<ServerSession>> NewSession(
    const SessionEnv& env, SessionTransport* transport, absl::Time deadline,
    const v1::OpenSession& open);

// One stream. OnRequest is called for one request at a time, in stream
// order; every other method is thread-safe. `transport` must outlive the
// handler or its OnDone(), whichever comes first.
class SessionHandler {
 public:
  // `caller`: who opened the stream (checked against the route grant).
  SessionHandler(const SessionEnv& env, SessionTransport* transport,
                 absl::Time deadline, Peer caller = {});

  void OnRequest(const v1::StageRequest& request);
  // The client half-closed: finish OK once the answers in flight are sent.
  void OnClientDone();
  // The stream is over (client done, cancelled or failed): no call reaches
  // the transport after this returns; the session frees what it holds.
  void OnDone();
  // Ends the stream with `status` (drain deadline, idle expiry).
  void Cancel(const absl::Status& status);

  // "" until opened.
  std::string session_id() const;
  absl::Time last_activity() const;

 private:
  void Open(const v1::OpenSession& open);
  std::shared_ptr<ServerSession> session() const;
  // Before a session exists: ends the stream with `status`.
  void Finish(const absl::Status& status);

  const SessionEnv env_;
  const absl::Time deadline_;
  const Peer caller_;
  const absl::Time created_ = absl::Now();
  mutable absl::Mutex mu_;
  SessionTransport* transport_ ABSL_GUARDED_BY(mu_);  // Null once done.
  std::shared_ptr<ServerSession> session_ ABSL_GUARDED_BY(mu_);
  bool over_ ABSL_GUARDED_BY(mu_) = false;  // Finished before opening.
};

}  // namespace edgesplit

#endif  // EDGESPLIT_EDGE_SERVER_SESSION_HANDLER_H_
