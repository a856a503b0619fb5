#include "edge_server/batcher.h"

#include <utility>

#include "runtime/torch_util.h"

namespace edgesplit {

Batcher::Batcher(const StageModel* stage, int64_t max_batch_tokens)
    : stage_(stage), max_batch_tokens_(max_batch_tokens) {
  worker_ = std::thread([this] { Run(); });
}

Batcher::~Batcher() {
  std::deque<BatchItem> left;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  worker_.join();
  {
    absl::MutexLock lock(&mu_);
    left.swap(queue_);
  }
  for (BatchItem& item : left) {
    item.done(absl::CancelledError("stage is shutting down"));
  }
}

void Batcher::Submit(BatchItem item) {
  {
    absl::MutexLock lock(&mu_);
    if (!stopping_) {
      queue_.push_back(std::move(item));
      return;
    }
  }
  item.done(absl::CancelledError("stage is shutting down"));
}

BatcherStats Batcher::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

void Batcher::Run() {
  for (;;) {
    std::vector<BatchItem> batch;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](Batcher* b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(b->mu_) {
            return b->stopping_ || !b->queue_.empty();
          },
          this));
      if (stopping_) return;
      // Take the oldest item and every queued item that can share its
      // forward (same adapter and output shape), up to the token budget.
      int64_t tokens = 0;
      const std::string adapter = queue_.front().adapter;
      const bool last_only = queue_.front().last_token_only;
      for (auto it = queue_.begin(); it != queue_.end();) {
        const int64_t n = it->input.size(0);
        if (it->adapter == adapter && it->last_token_only == last_only &&
            (batch.empty() || tokens + n <= max_batch_tokens_)) {
          tokens += n;
          batch.push_back(std::move(*it));
          it = queue_.erase(it);
        } else {
          ++it;
        }
      }
      stats_.forwards += 1;
      stats_.items += batch.size();
    }
    Execute(batch);
  }
}

absl::StatusOr<at::Tensor> Batcher::Forward(
    std::vector<BatchItem>& items) const {
  return TorchCall("Batcher::Forward", [&]() -> absl::StatusOr<at::Tensor> {
    StageInput in;
    std::vector<at::Tensor> inputs;
    for (BatchItem& item : items) {
      in.sequences.push_back({item.cache, item.input.size(0)});
      inputs.push_back(item.input);
    }
    at::Tensor cat = inputs.size() == 1 ? inputs[0] : at::cat(inputs, 0);
    if (stage_->spec().embedding) {
      in.tokens = cat;
    } else {
      in.hidden = cat;
    }
    in.last_token_only = items[0].last_token_only;
    in.adapter = items[0].adapter;
    return stage_->Forward(in);
  });
}

void Batcher::Execute(std::vector<BatchItem>& items) {
  absl::StatusOr<at::Tensor> out = Forward(items);
  if (!out.ok() && items.size() > 1) {
    // Forward changes no cache on error: run each item alone so only the
    // offending session sees its error.
    for (BatchItem& item : items) {
      std::vector<BatchItem> one;
      one.push_back(std::move(item));
      Execute(one);
    }
    return;
  }
  if (!out.ok()) {
    items[0].done(out.status());
    return;
  }
  int64_t row = 0;
  for (BatchItem& item : items) {
    const int64_t rows = item.last_token_only && stage_->spec().head
                             ? 1
                             : item.input.size(0);
    item.done(out->narrow(0, row, rows));
    row += rows;
  }
}

}  // namespace edgesplit
