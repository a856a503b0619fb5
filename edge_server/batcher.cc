#include "edge_server/batcher.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <utility>

#include "runtime/threading.h"
#include "runtime/torch_util.h"

namespace edgesplit {

Batcher::Batcher(const StageModel* stage, int64_t max_batch_tokens,
                 std::shared_ptr<std::atomic<double>> slowdown,
                 BatchMetrics metrics)
    : state_(std::make_shared<State>()) {
  state_->slowdown = std::move(slowdown);
  state_->metrics = metrics;
  worker_ = WorkerThread([state = state_, stage, max_batch_tokens] {
    Run(state, stage, max_batch_tokens);
  });
}

Batcher::~Batcher() {
  std::deque<BatchItem> left;
  {
    absl::MutexLock lock(&state_->mu);
    state_->stopping = true;
    left.swap(state_->queue);
  }
  // Destroyed from a done callback on the worker, this detaches: the worker
  // returns to Run(), sees `stopping` and exits without touching `this`.
  worker_.Join();
  for (BatchItem& item : left) {
    item.done(absl::CancelledError("stage is shutting down"));
  }
}

void Batcher::Submit(BatchItem item) {
  item.enqueued = std::chrono::steady_clock::now();
  {
    absl::MutexLock lock(&state_->mu);
    if (!state_->stopping) {
      state_->queue.push_back(std::move(item));
      return;
    }
  }
  item.done(absl::CancelledError("stage is shutting down"));
}

BatcherStats Batcher::stats() const {
  absl::MutexLock lock(&state_->mu);
  return state_->stats;
}

void Batcher::Observe(const BatchMetrics& m,
                      const std::vector<BatchItem>& batch) {
  const auto now = std::chrono::steady_clock::now();
  int64_t rows = 0;
  for (const BatchItem& item : batch) {
    rows += item.input.size(0);
    if (m.queue_seconds != nullptr) {
      m.queue_seconds->Observe(
          std::chrono::duration<double>(now - item.enqueued).count());
    }
  }
  if (m.batch_items != nullptr) m.batch_items->Observe(batch.size());
  if (m.tokens != nullptr) m.tokens->Increment(rows);
}

void Batcher::Run(std::shared_ptr<State> state, const StageModel* stage,
                  int64_t max_batch_tokens) {
  for (;;) {
    std::vector<BatchItem> batch;
    {
      absl::MutexLock lock(&state->mu);
      state->mu.Await(absl::Condition(
          +[](State* s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(s->mu) {
            return s->stopping || !s->queue.empty();
          },
          state.get()));
      if (state->stopping) return;
      // Gather the sessions that were in the previous forward.
      constexpr absl::Duration kGatherStep = absl::Milliseconds(2);
      constexpr absl::Duration kGatherMax = absl::Milliseconds(10);
      const absl::Time gather_until = absl::Now() + kGatherMax;
      while (state->queue.size() < state->last_batch && !state->stopping &&
             absl::Now() < gather_until) {
        const size_t have = state->queue.size();
        struct Grew {
          State* s;
          size_t have;
        } grew{state.get(), have};
        if (!state->mu.AwaitWithTimeout(
                absl::Condition(
                    +[](Grew* g) ABSL_EXCLUSIVE_LOCKS_REQUIRED(g->s->mu) {
                      return g->s->stopping || g->s->queue.size() > g->have;
                    },
                    &grew),
                kGatherStep)) {
          break;  // Nobody else came within a step: go.
        }
      }
      if (state->stopping) return;
      // Take the oldest item and every queued item that can share its
      // forward (same output shape), up to the token budget.
      auto& queue = state->queue;
      int64_t tokens = 0;
      const bool last_only = queue.front().last_token_only;
      for (auto it = queue.begin(); it != queue.end();) {
        const int64_t n = it->input.size(0);
        if (it->last_token_only == last_only &&
            (batch.empty() || tokens + n <= max_batch_tokens)) {
          tokens += n;
          batch.push_back(std::move(*it));
          it = queue.erase(it);
        } else {
          ++it;
        }
      }
      state->stats.forwards += 1;
      state->stats.items += batch.size();
      state->last_batch = batch.size();
    }
    Observe(state->metrics, batch);
    // Each adapter's rows together: one run per adapter in the forward,
    // in an order that does not depend on where adapters sit in memory
    // (base first, then by name).
    std::stable_sort(
        batch.begin(), batch.end(), [](const BatchItem& a, const BatchItem& b) {
          auto key = [](const BatchItem& i) {
            return std::make_pair(i.adapter != nullptr, i.adapter
                                                            ? i.adapter->name()
                                                            : std::string());
          };
          return key(a) < key(b);
        });
    Execute(stage, batch, max_batch_tokens, *state);
    // `batch` (and what its callbacks held) is released here, possibly
    // destroying the Batcher: only `state` is used after this point.
  }
}

absl::StatusOr<at::Tensor> Batcher::Forward(const StageModel* stage,
                                            std::vector<BatchItem>& items) {
  return TorchCall("Batcher::Forward", [&]() -> absl::StatusOr<at::Tensor> {
    StageInput in;
    std::vector<at::Tensor> inputs;
    for (BatchItem& item : items) {
      in.sequences.push_back({item.cache, item.input.size(0)});
      inputs.push_back(item.input);
    }
    at::Tensor cat = inputs.size() == 1 ? inputs[0] : at::cat(inputs, 0);
    if (stage->spec().embedding) {
      in.tokens = cat;
    } else {
      in.hidden = cat;
    }
    in.last_token_only = items[0].last_token_only;
    for (const BatchItem& item : items) {
      if (item.adapter != nullptr) {
        for (const BatchItem& i : items) {
          in.sequence_adapters.push_back(i.adapter.get());
        }
        break;
      }
    }
    return stage->Forward(in);
  });
}

absl::StatusOr<at::Tensor> Batcher::ForwardChunked(const StageModel* stage,
                                                   BatchItem& item,
                                                   int64_t chunk) {
  // The KV cache makes chunk after chunk the same computation as one
  // forward (each chunk attends to what the cache holds), while the
  // attention scores of a chunk are only chunk x (past + chunk).
  const int64_t n = item.input.size(0);
  const int64_t start = item.cache->length();
  // Only a stage with the head answers the last row alone; others pass
  // every row's hidden state on (the next hop's cache needs them all).
  const bool last_only = item.last_token_only && stage->spec().head;
  const at::Tensor whole = item.input;
  std::vector<at::Tensor> outs;
  absl::StatusOr<at::Tensor> out;
  for (int64_t first = 0; first < n; first += chunk) {
    const int64_t rows = std::min(chunk, n - first);
    std::vector<BatchItem> one(1);
    one[0].cache = item.cache;
    one[0].input = whole.narrow(0, first, rows);
    one[0].adapter = item.adapter;
    // Only the last chunk's last row matters when that is all asked for.
    one[0].last_token_only = item.last_token_only;
    out = Forward(stage, one);
    if (!out.ok()) {
      // As an unchunked forward would: the cache holds none of it.
      item.cache->Truncate(start);
      return out;
    }
    if (!last_only) outs.push_back(*out);
  }
  if (last_only) return out;
  return TorchCall(
      "Batcher::ForwardChunked",
      [&]() -> absl::StatusOr<at::Tensor> { return at::cat(outs, 0); });
}

void Batcher::Execute(const StageModel* stage, std::vector<BatchItem>& items,
                      int64_t max_batch_tokens, State& state) {
  // Every forward finishes before any callback runs: a callback may end
  // the stage's life.
  const bool head = stage->spec().head;
  auto rows_of = [head](const BatchItem& item) {
    return item.last_token_only && head ? int64_t{1} : item.input.size(0);
  };
  std::vector<absl::StatusOr<at::Tensor>> results;
  const bool single_token = items.size() == 1 && items[0].input.size(0) == 1;
  const auto t0 = std::chrono::steady_clock::now();
  // A lone item longer than the token budget (a long prompt) runs in
  // chunks of the budget: the budget bounds a forward's memory too.
  absl::StatusOr<at::Tensor> out =
      items.size() == 1 && items[0].input.size(0) > max_batch_tokens
          ? ForwardChunked(stage, items[0], max_batch_tokens)
          : Forward(stage, items);
  auto spent = std::chrono::steady_clock::now() - t0;
  spent += EmulateSlowdown(t0, state.slowdown ? state.slowdown->load() : 1.0);
  if (state.metrics.forward_seconds != nullptr) {
    state.metrics.forward_seconds->Observe(
        std::chrono::duration<double>(spent).count());
  }
  if (single_token && out.ok()) {
    absl::MutexLock lock(&state.mu);
    ++state.stats.single_token_forwards;
    state.stats.single_token_ms +=
        std::chrono::duration<double, std::milli>(spent).count();
  }
  if (out.ok()) {
    int64_t row = 0;
    for (const BatchItem& item : items) {
      const int64_t n = rows_of(item);
      results.push_back(out->narrow(0, row, n));
      row += n;
    }
  } else if (items.size() == 1) {
    results.push_back(out.status());
  } else {
    // Forward changes no cache on error: run each item alone so only the
    // offending session sees its error.
    for (BatchItem& item : items) {
      std::vector<BatchItem> one;
      one.push_back(std::move(item));
      results.push_back(Forward(stage, one));
      item = std::move(one[0]);
    }
  }
  for (size_t i = 0; i < items.size(); ++i) {
    items[i].done(std::move(results[i]));
  }
}

}  // namespace edgesplit
