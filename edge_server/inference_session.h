// An inference session on one hop: its own KV cache on the hosted stage,
// each forward request run through the stage's batcher (continuous batching
// with other sessions) and then passed to the next hop or, on the last hop,
// answered. One forward at a time per session (the cache advances in
// order), so answers leave in request order without renumbering.
#ifndef EDGESPLIT_EDGE_SERVER_INFERENCE_SESSION_H_
#define EDGESPLIT_EDGE_SERVER_INFERENCE_SESSION_H_

#include <ATen/ATen.h>

#include <chrono>
#include <deque>
#include <memory>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "edge_server/server_session.h"
#include "runtime/draft_check.h"
#include "runtime/kv_cache.h"

namespace edgesplit {

// Forward requests a session may have waiting on a server: more means the
// client pipelines without reading, and gets RESOURCE_EXHAUSTED.
inline constexpr size_t kMaxPendingRequests = 8;

class InferenceSession : public ServerSession {
 public:
  // Create with std::make_shared, then Start().
  InferenceSession(const SessionEnv& env, SessionTransport* transport,
                   absl::Time deadline, OpenedHop hop);

  void OnRequest(const v1::StageRequest& request) override;

 private:
  struct Pending {
    v1::ForwardRequest request;
    at::Tensor input;
    std::chrono::steady_clock::time_point received;
    // The input's share of the server's max_pending_input_bytes, given
    // back when the request is done with (shared: Pending is copied into
    // the batcher's std::function).
    std::shared_ptr<UsageBudget::Charge> charge;
    // A checked speculative step's check, read (and validated) once, at
    // receipt.
    std::optional<DraftCheck> check;
  };

  void Forward(const v1::ForwardRequest& forward);
  // Hands the oldest queued request to the batcher unless one runs.
  void SubmitLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // On the batcher's thread.
  void OnComputed(Pending pending, absl::StatusOr<at::Tensor> out,
                  std::chrono::steady_clock::time_point started);
  // The last hop's answer (logits, or hidden states when U-shaped).
  void Answer(const Pending& pending, at::Tensor out, v1::HopTiming timing);
  void PassOn(const Pending& pending, const at::Tensor& out,
              v1::HopTiming timing);

  bool IdleLocked() const override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnEndLocked() override ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  const char* kind() const override { return "inference"; }

  // Freed when the session ends, or when the forward running then returns.
  std::unique_ptr<SequenceKvCache> cache_ ABSL_GUARDED_BY(mu_);
  uint64_t next_step_ ABSL_GUARDED_BY(mu_) = 0;
  // Positions the cache will hold once every queued request has run: a
  // request's rollback may not exceed what it finds.
  int64_t positions_ ABSL_GUARDED_BY(mu_) = 0;
  // Requests waiting for this session's previous forward on this stage.
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  bool computing_ ABSL_GUARDED_BY(mu_) = false;
  int next_pending_ ABSL_GUARDED_BY(mu_) = 0;  // Sent to the next hop.
};

}  // namespace edgesplit

#endif  // EDGESPLIT_EDGE_SERVER_INFERENCE_SESSION_H_
