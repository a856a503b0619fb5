// Key/value cache of one sequence on one pipeline stage, with memory drawn
// from a shared byte budget. The budget is the only way a server's KV memory
// grows: exceeding it fails the request with RESOURCE_EXHAUSTED instead of
// silently growing (and later OOM-killing every session).
#ifndef EDGESPLIT_RUNTIME_KV_CACHE_H_
#define EDGESPLIT_RUNTIME_KV_CACHE_H_

#include <ATen/ATen.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace edgesplit {

// A byte budget shared by many caches. Thread-safe.
class KvBudget {
 public:
  explicit KvBudget(int64_t limit_bytes) : limit_(limit_bytes) {}

  // Takes `bytes` from the budget, or fails with RESOURCE_EXHAUSTED (and
  // takes nothing).
  absl::Status Reserve(int64_t bytes);
  void Release(int64_t bytes);
  int64_t used() const;
  int64_t limit() const { return limit_; }

 private:
  const int64_t limit_;
  mutable absl::Mutex mu_;
  int64_t used_ ABSL_GUARDED_BY(mu_) = 0;
};

// Per-layer K and V of one sequence for the blocks of one stage, stored as
// [num_kv_heads, capacity, head_dim] per layer and grown geometrically.
// Not thread-safe: one sequence is advanced by one thread at a time.
// A forward pass calls Reserve() for the new tokens first (so a budget
// failure changes nothing), then Append() for every layer, then Commit().
class SequenceKvCache {
 public:
  // `budget` may be null (unbounded); otherwise it must outlive the cache.
  SequenceKvCache(int64_t num_layers, int64_t num_kv_heads, int64_t head_dim,
                  int64_t max_tokens, at::ScalarType dtype, KvBudget* budget);
  ~SequenceKvCache();

  SequenceKvCache(const SequenceKvCache&) = delete;
  SequenceKvCache& operator=(const SequenceKvCache&) = delete;

  int64_t length() const { return length_; }  // Committed tokens.
  int64_t capacity() const { return capacity_; }
  int64_t max_tokens() const { return max_tokens_; }
  int64_t num_layers() const { return static_cast<int64_t>(k_.size()); }
  int64_t num_kv_heads() const { return num_kv_heads_; }
  int64_t head_dim() const { return head_dim_; }
  at::ScalarType dtype() const { return dtype_; }
  int64_t reserved_bytes() const { return reserved_bytes_; }

  // Ensures room for `tokens` in total. OUT_OF_RANGE past max_tokens (the
  // model's context), RESOURCE_EXHAUSTED when the budget is short.
  absl::Status Reserve(int64_t tokens);

  // Stores k and v ([num_kv_heads, n, head_dim]) of `layer` at positions
  // [length(), length() + n) and returns the keys and values of all
  // positions [0, length() + n). Requires Reserve(length() + n) first.
  std::pair<at::Tensor, at::Tensor> Append(int64_t layer, const at::Tensor& k,
                                           const at::Tensor& v);
  // The storage of `layer`'s keys or values, [num_kv_heads, capacity,
  // head_dim] contiguous: the fused decode path writes new positions and
  // reads [0, length() + n) in place (after Reserve, like Append).
  const at::Tensor& key_storage(int64_t layer) const { return k_[layer]; }
  const at::Tensor& value_storage(int64_t layer) const { return v_[layer]; }
  // Makes the n appended positions part of the sequence.
  void Commit(int64_t n);
  // Forgets positions >= `length` (rollback, e.g. rejected draft tokens).
  void Truncate(int64_t length);

 private:
  const int64_t num_kv_heads_;
  const int64_t head_dim_;
  const int64_t max_tokens_;
  const at::ScalarType dtype_;
  KvBudget* const budget_;
  std::vector<at::Tensor> k_;
  std::vector<at::Tensor> v_;
  int64_t length_ = 0;
  int64_t capacity_ = 0;
  int64_t reserved_bytes_ = 0;
};

}  // namespace edgesplit

#endif  // EDGESPLIT_RUNTIME_KV_CACHE_H_
