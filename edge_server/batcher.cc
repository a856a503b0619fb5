#include "edge_server/batcher.h"

#include <chrono>
#include <utility>

#include "runtime/threading.h"
#include "runtime/torch_util.h"

namespace edgesplit {

Batcher::Batcher(const StageModel* stage, int64_t max_batch_tokens,
                 std::shared_ptr<std::atomic<double>> slowdown)
    : state_(std::make_shared<State>()) {
  state_->slowdown = std::move(slowdown);
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
      // forward (same adapter and output shape), up to the token budget.
      auto& queue = state->queue;
      int64_t tokens = 0;
      const std::string adapter = queue.front().adapter;
      const bool last_only = queue.front().last_token_only;
      for (auto it = queue.begin(); it != queue.end();) {
        const int64_t n = it->input.size(0);
        if (it->adapter == adapter && it->last_token_only == last_only &&
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
    Execute(stage, batch, *state);
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
    in.adapter = items[0].adapter;
    return stage->Forward(in);
  });
}

void Batcher::Execute(const StageModel* stage, std::vector<BatchItem>& items,
                      State& state) {
  // Every forward finishes before any callback runs: a callback may end
  // the stage's life.
  const bool head = stage->spec().head;
  auto rows_of = [head](const BatchItem& item) {
    return item.last_token_only && head ? int64_t{1} : item.input.size(0);
  };
  std::vector<absl::StatusOr<at::Tensor>> results;
  const bool single_token = items.size() == 1 && items[0].input.size(0) == 1;
  const auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<at::Tensor> out = Forward(stage, items);
  auto spent = std::chrono::steady_clock::now() - t0;
  spent += EmulateSlowdown(t0, state.slowdown ? state.slowdown->load() : 1.0);
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
