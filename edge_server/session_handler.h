// The server side of one StageService.Session stream, apart from gRPC:
// validates OpenSession, binds the session to a hosted stage with its own
// KV cache, opens the stream to the next hop, and turns each forward
// request into a batched forward plus (on non-final stages) a request to
// the next hop, answering in request order. The reactor glue
// (grpc_service.h) feeds it requests and carries its responses.
#ifndef EDGESPLIT_EDGE_SERVER_SESSION_HANDLER_H_
#define EDGESPLIT_EDGE_SERVER_SESSION_HANDLER_H_

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "edge_server/next_hop.h"
#include "edge_server/stage_host.h"
#include "edge_server/training_job.h"
#include "edgesplit/v1/stage.pb.h"
#include "proto/protocol.h"
#include "proto/tensor_codec.h"

namespace edgesplit {

// Forward requests a session may have waiting on a server: more means the
// client pipelines without reading, and gets RESOURCE_EXHAUSTED.
inline constexpr size_t kMaxPendingRequests = 8;

// Where a handler sends its responses. Implementations must tolerate
// calls from any thread; the handler serializes them.
class SessionTransport {
 public:
  virtual ~SessionTransport() = default;
  virtual void Send(const v1::StageResponse& response) = 0;
  // Ends the stream with `status`. Called at most once.
  virtual void Finish(const absl::Status& status) = 0;
};

struct SessionEnv {
  StageHost* host = nullptr;            // Not owned; outlives handlers.
  NextHopFactory* next_hops = nullptr;  // Not owned; outlives handlers.
  TrainingJobs* jobs = nullptr;  // Not owned; null: no training sessions.
  wire::TensorLimits limits;
};

// One session. Create with std::make_shared (callbacks keep it alive).
// OnRequest is called for one request at a time, in stream order; all
// other methods are thread-safe.
class SessionHandler : public std::enable_shared_from_this<SessionHandler> {
 public:
  SessionHandler(const SessionEnv& env, SessionTransport* transport,
                 absl::Time deadline);
  ~SessionHandler();

  void OnRequest(const v1::StageRequest& request);
  // The client half-closed: finish OK once the answers in flight are sent.
  void OnClientDone();
  // The stream is over (client done, cancelled or failed): detach from the
  // transport (no call reaches it after this returns), close the next hop,
  // and free the KV cache once in-flight work drains.
  void OnDone();
  // Ends the session with `status` (drain deadline, idle expiry).
  void Cancel(const absl::Status& status);

  const std::string& session_id() const { return session_id_; }
  absl::Time last_activity() const;

 private:
  struct Pending {
    v1::ForwardRequest request;
    at::Tensor input;
    std::chrono::steady_clock::time_point received;
  };

  void Open(const v1::OpenSession& open);
  void Forward(const v1::ForwardRequest& forward);
  // Training sessions (session_training.cc). Requests are numbered as they
  // arrive and answered in that order (RespondAt), while compute runs on
  // the job's thread and hops work on different micro-batches at once.
  void OnTrainingRequest(const v1::StageRequest& request);
  void TrainForward(uint64_t seq, const v1::ForwardRequest& forward);
  void TrainBackward(uint64_t seq, const v1::BackwardRequest& backward);
  void TrainStep(uint64_t seq, const v1::OptimizerStep& step);
  void TrainRestore(uint64_t seq, const v1::RestoreRequest& restore);
  void TrainExport(uint64_t seq, const v1::ExportRequest& request);
  // Sends `request` to the next hop; `then` gets its answer (on a gRPC
  // thread); a failure ends the session.
  void ToNext(v1::StageRequest request,
              std::function<void(v1::StageResponse)> then);
  void RespondAt(uint64_t seq, v1::StageResponse response);
  // What training requests use, read once under the lock (empty once the
  // session is over).
  struct TrainingView {
    std::shared_ptr<HostedStage> stage;
    std::shared_ptr<NextHop> next;
    v1::Codec codec = v1::CODEC_FP32;
  };
  TrainingView View();
  bool Finished();
  uint64_t Key(uint64_t micro_batch) const {
    return (training_prefix_ << 40) | (micro_batch & ((uint64_t{1} << 40) - 1));
  }
  void SubmitLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnComputed(Pending pending, absl::StatusOr<at::Tensor> out,
                  std::chrono::steady_clock::time_point started);
  void Respond(const v1::StageResponse& response);
  void Fail(const absl::Status& status);
  // Marks the session over, frees its KV cache unless a step is running,
  // and hands back the next hop for the caller to close outside the lock.
  std::shared_ptr<NextHop> EndLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Finishes OK if the client half-closed and nothing is in flight.
  void MaybeFinishIdle();

  const SessionEnv env_;
  // Training tasks may outlive the server's host (they run on the job's
  // thread); they name the node from this copy.
  const std::string node_;
  const absl::Time deadline_;
  std::string session_id_;

  mutable absl::Mutex mu_;
  SessionTransport* transport_ ABSL_GUARDED_BY(mu_);
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  bool opened_ ABSL_GUARDED_BY(mu_) = false;
  std::shared_ptr<HostedStage> stage_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<SequenceKvCache> cache_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<NextHop> next_ ABSL_GUARDED_BY(mu_);
  v1::Codec codec_ ABSL_GUARDED_BY(mu_) = v1::CODEC_FP32;
  std::string adapter_ ABSL_GUARDED_BY(mu_);
  bool return_hidden_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t next_step_ ABSL_GUARDED_BY(mu_) = 0;
  // Requests waiting for this session's previous forward on this stage
  // (one at a time per session: the cache advances in order).
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  bool computing_ ABSL_GUARDED_BY(mu_) = false;
  int next_pending_ ABSL_GUARDED_BY(mu_) = 0;  // Sent to the next hop.
  bool client_done_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time last_activity_ ABSL_GUARDED_BY(mu_);

  // Training sessions: set once by Open, read-only afterwards.
  std::shared_ptr<TrainingJob> job_;
  uint64_t training_prefix_ = 0;
  std::atomic<bool> training_{false};
  // Answers in request order: the next request's number, the next answer
  // to send, and answers waiting for earlier ones.
  uint64_t next_seq_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t next_answer_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<uint64_t, v1::StageResponse> answers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace edgesplit

#endif  // EDGESPLIT_EDGE_SERVER_SESSION_HANDLER_H_
