// What every session on an edge server shares, apart from gRPC: the open it
// was made from (stage, this hop's role in the route, codec, adapter), the
// stream to the next hop, the answer transport and the session's lifecycle.
// Two kinds derive from it: InferenceSession (inference_session.h: KV cache,
// continuous batching) and TrainingSession (training_session.h: a training
// job's micro-batches). SessionHandler (session_handler.h) validates the
// OpenSession, makes the right kind and feeds it the stream's requests; the
// reactor glue (stage_service.h) feeds the handler.
#ifndef EDGESPLIT_EDGE_SERVER_SERVER_SESSION_H_
#define EDGESPLIT_EDGE_SERVER_SERVER_SESSION_H_

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "edge_server/admission.h"
#include "edge_server/grant_gate.h"
#include "edge_server/next_hop.h"
#include "edge_server/server_metrics.h"
#include "edge_server/stage_host.h"
#include "edgesplit/v1/stage.pb.h"
#include "proto/tensor_codec.h"
#include "security/tls.h"

namespace edgesplit {

class TrainingJobs;

// Where a session sends its responses. Implementations must tolerate calls
// from any thread; sessions serialize them.
class SessionTransport {
 public:
  virtual ~SessionTransport() = default;
  virtual void Send(const v1::StageResponse& response) = 0;
  // Ends the stream with `status` (OK: a normal finish). Called at most
  // once.
  virtual void Finish(const absl::Status& status) = 0;
};

struct SessionEnv {
  StageHost* host = nullptr;            // Not owned; outlives sessions.
  NextHopFactory* next_hops = nullptr;  // Not owned; outlives sessions.
  TrainingJobs* jobs = nullptr;  // Not owned; null: no training sessions.
  wire::TensorLimits limits;
  // Not owned. Null: callers are not identified / opens not checked
  // against route grants (tests of session logic).
  const TransportSecurity* security = nullptr;
  const GrantGate* grants = nullptr;
  // Server-wide budgets (admission.h); null: unlimited.
  std::shared_ptr<UsageBudget> pending_inputs;        // bytes
  std::shared_ptr<UsageBudget> kept_training_tokens;  // tokens
  // Sees every request a stream brings, before it is handled (on the
  // stream's gRPC thread; must be thread-safe). Empty: none. For tests
  // that check what crosses the wire (e.g. that a private device noised
  // its activations before they left it).
  std::function<void(const v1::StageRequest&)> request_tap;
  // Not owned; outlives sessions. Null: nothing counted (tests).
  const ServerMetrics* metrics = nullptr;
};

// This hop's place in the session's route, decided once at open.
enum class HopRole {
  kMiddle,        // Passes its output on to the next hop.
  kLastWithHead,  // Ends the route with the LM head: answers logits (fp32).
  kLastHidden,    // Ends a U-shaped route: answers hidden states (codec).
};

// A validated OpenSession, as this hop sees it.
struct OpenedHop {
  std::string session_id;
  std::shared_ptr<HostedStage> stage;
  HopRole role = HopRole::kMiddle;
  v1::Codec codec = v1::CODEC_FP32;
  std::string adapter;
  // An inference session's adapter: its part on this stage (from the
  // stage's AdapterCache, set by NewSession), held for the session's
  // lifetime; null for the base model.
  std::shared_ptr<const LoraAdapter> lora;
};

// Checks `open` against this server (protocol, route, stage, codec, head)
// and works out this hop's role. Errors name the field and value.
absl::StatusOr<OpenedHop> ValidateOpen(const SessionEnv& env,
                                       const v1::OpenSession& open);

// Milliseconds since `t`.
double MillisSince(std::chrono::steady_clock::time_point t);
// Puts this hop's `timing` first in `result`'s timings (route order).
void PrependTiming(v1::HopTiming timing, v1::ForwardResult* result);

// One open session. Create with std::make_shared (callbacks keep it alive
// through weak or shared references). OnRequest is called for one request
// at a time, in stream order; every other method is thread-safe.
class ServerSession : public std::enable_shared_from_this<ServerSession> {
 public:
  virtual ~ServerSession() = default;
  ServerSession(const ServerSession&) = delete;
  ServerSession& operator=(const ServerSession&) = delete;

  // Opens the stream to the next hop (unless last) with the rest of
  // `open`'s route, and answers the open once the whole chain confirmed: a
  // bad hop further down fails the open, not the first token.
  void Start(const v1::OpenSession& open);
  // A request after the open (neither open nor close).
  virtual void OnRequest(const v1::StageRequest& request) = 0;
  // The client half-closed: finish OK once the answers in flight are sent.
  void OnClientDone();
  // The stream is over (client done, cancelled or failed): detach from the
  // transport (no call reaches it after this returns), close the next hop,
  // and free per-session state once in-flight work drains.
  void OnDone();
  // Ends the stream with `status`: OK is a normal finish (the client
  // closed), anything else an error. Later calls do nothing.
  void End(const absl::Status& status);

  // Counts a request after the open as received (metrics).
  void Received(const v1::StageRequest& request) const;

  const std::string& session_id() const { return hop_.session_id; }
  bool Over() const;
  absl::Time last_activity() const;
  void Touch();

 protected:
  ServerSession(const SessionEnv& env, SessionTransport* transport,
                absl::Time deadline, OpenedHop hop);

  // Sends `response` unless the session is over.
  void Respond(const v1::StageResponse& response);
  void RespondLocked(const v1::StageResponse& response)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends `request` to the next hop; `then` gets its answer (on a gRPC
  // thread). A failure, or no next hop (the session ended), ends the
  // session instead.
  void ToNext(v1::StageRequest request,
              std::function<void(v1::StageResponse)> then);
  bool OverLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return finished_;
  }
  // Finishes OK if the client half-closed and IdleLocked().
  void MaybeFinishIdle();

  // "inference" or "training" (metrics' kind label).
  virtual const char* kind() const = 0;
  // Nothing in flight: every request answered.
  virtual bool IdleLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // The session just ended (called once): drop queued work, free memory
  // not held by work still running.
  virtual void OnEndLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) = 0;
  // Fills this hop's part of the open confirmation; `downstream` is the
  // next hop's (null on the last hop).
  virtual void ConfirmOpen(v1::SessionOpened* mine,
                           const v1::SessionOpened* downstream);

  const SessionEnv env_;
  // Work may outlive the server's host (a training job's thread): it names
  // the node from this copy.
  const std::string node_;
  const absl::Time deadline_;
  const OpenedHop hop_;
  mutable absl::Mutex mu_;

 private:
  // Marks the session over and hands back the next hop for the caller to
  // close outside the lock.
  // `code` says why (metrics).
  std::shared_ptr<NextHop> EndLocked(absl::StatusCode code)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  SessionTransport* transport_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<NextHop> next_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool client_done_ ABSL_GUARDED_BY(mu_) = false;
  bool counted_open_ ABSL_GUARDED_BY(mu_) = false;  // In metrics' open gauge.
  absl::Time last_activity_ ABSL_GUARDED_BY(mu_);
};

}  // namespace edgesplit

#endif  // EDGESPLIT_EDGE_SERVER_SERVER_SESSION_H_
