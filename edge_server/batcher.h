// Continuous batching of one stage's work across sessions: requests that
// arrive while a forward runs are merged into the next one (a ragged batch,
// see runtime/stage_model.h), so N sessions decoding together cost about
// one forward of N rows instead of N forwards.
#ifndef EDGESPLIT_EDGE_SERVER_BATCHER_H_
#define EDGESPLIT_EDGE_SERVER_BATCHER_H_

#include <ATen/ATen.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "base/worker_thread.h"
#include "ops/metrics.h"
#include "runtime/stage_model.h"

namespace edgesplit {

struct BatchItem {
  SequenceKvCache* cache = nullptr;  // The session's cache on this stage.
  at::Tensor input;  // int64 tokens [n] (first stage) or hidden [n, H].
  bool last_token_only = false;
  // The session's LoRA adapter (its part on this stage), or null. Items of
  // different adapters share a forward (see StageInput::sequence_adapters).
  std::shared_ptr<const LoraAdapter> adapter;
  // Called once, on the batcher thread, with this item's rows of the
  // output or an error. Must not block for long.
  std::function<void(absl::StatusOr<at::Tensor>)> done;
  // Set by Submit: when the item joined the queue.
  std::chrono::steady_clock::time_point enqueued;
};

// Where a batcher reports each forward (ops/metrics.h); null members are
// skipped. Owned by the server's metrics registry, which outlives it.
struct BatchMetrics {
  metrics::Histogram* queue_seconds = nullptr;    // per item: queued
  metrics::Histogram* forward_seconds = nullptr;  // per forward
  metrics::Histogram* batch_items = nullptr;      // items per forward
  metrics::Counter* tokens = nullptr;             // rows computed
};

struct BatcherStats {
  int64_t forwards = 0;  // StageModel::Forward calls
  int64_t items = 0;     // requests served
  // Forwards of a single one-token request (a lone decode step) and their
  // summed time: the live counterpart of the compute profile.
  int64_t single_token_forwards = 0;
  double single_token_ms = 0;
};

// Thread-safe. Owns one worker thread; the stage must outlive the batcher.
// Sessions' steps arrive staggered (each after its previous answer went
// round the chain); starting a forward on the first arrival would split
// them into a batch of one and a batch of the rest, forever. So when fewer
// items are queued than the previous forward held, the worker waits a
// little for the rest (kGatherStep per arrival, kGatherMax in all); a lone
// session never waits. Sessions of different LoRA adapters share a
// forward: its items are ordered by adapter so each adapter's rows form
// one run (one segment of the mixed-adapter kernel). A forward holds at most
// `max_batch_tokens` rows: a longer prompt runs alone, in chunks of that many
// (chunked prefill), so one request never needs more activation or attention
// memory than that.
//
// A done callback may drop the last reference to whatever owns the batcher:
// destroyed from its own worker thread, the batcher's WorkerThread detaches
// (the loop only touches the State it shares) instead of joining itself.
class Batcher {
 public:
  // `slowdown` (shared, may be null) emulates a slower machine: each forward
  // then takes *slowdown times as long (the worker sleeps the difference).
  Batcher(const StageModel* stage, int64_t max_batch_tokens,
          std::shared_ptr<std::atomic<double>> slowdown = nullptr,
          BatchMetrics metrics = {});
  ~Batcher();  // Fails queued items with CANCELLED, joins the worker.

  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  void Submit(BatchItem item);
  BatcherStats stats() const;

 private:
  struct State {
    absl::Mutex mu;
    std::deque<BatchItem> queue ABSL_GUARDED_BY(mu);
    bool stopping ABSL_GUARDED_BY(mu) = false;
    BatcherStats stats ABSL_GUARDED_BY(mu);
    size_t last_batch = 0;  // Worker-only: items in the previous forward.
    std::shared_ptr<std::atomic<double>> slowdown;  // Set once; may be null.
    BatchMetrics metrics;                           // Set once.
  };
  static void Observe(const BatchMetrics& metrics,
                      const std::vector<BatchItem>& batch);
  static void Run(std::shared_ptr<State> state, const StageModel* stage,
                  int64_t max_batch_tokens);
  // Runs `items` as one forward; on failure, retries them one by one so
  // one session's error (say, its KV budget) fails only that session.
  // Touches `stage` only before the first done callback runs.
  static void Execute(const StageModel* stage, std::vector<BatchItem>& items,
                      int64_t max_batch_tokens, State& state);
  static absl::StatusOr<at::Tensor> Forward(const StageModel* stage,
                                            std::vector<BatchItem>& items);
  // One item in forwards of at most `chunk` rows each; on failure the
  // item's cache is back where it was.
  static absl::StatusOr<at::Tensor> ForwardChunked(const StageModel* stage,
                                                   BatchItem& item,
                                                   int64_t chunk);

  std::shared_ptr<State> state_;
  WorkerThread worker_;  // Runs Run(state_, ...).
};

}  // namespace edgesplit

#endif  // EDGESPLIT_EDGE_SERVER_BATCHER_H_
