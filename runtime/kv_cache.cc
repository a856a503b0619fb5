#include "runtime/kv_cache.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace edgesplit {

absl::Status KvBudget::Reserve(int64_t bytes) {
  absl::MutexLock lock(&mu_);
  if (bytes > limit_ - used_) {
    return absl::ResourceExhaustedError(
        absl::StrCat("KV cache budget exhausted: need ", bytes, " more bytes, ",
                     used_, " of ", limit_, " in use"));
  }
  used_ += bytes;
  return absl::OkStatus();
}

void KvBudget::Release(int64_t bytes) {
  absl::MutexLock lock(&mu_);
  used_ -= bytes;
  if (used_ < 0) std::abort();  // Invariant: releases match reservations.
}

int64_t KvBudget::used() const {
  absl::MutexLock lock(&mu_);
  return used_;
}

SequenceKvCache::SequenceKvCache(int64_t num_layers, int64_t num_kv_heads,
                                 int64_t head_dim, int64_t max_tokens,
                                 at::ScalarType dtype, KvBudget* budget)
    : num_kv_heads_(num_kv_heads),
      head_dim_(head_dim),
      max_tokens_(max_tokens),
      dtype_(dtype),
      budget_(budget),
      k_(num_layers),
      v_(num_layers) {}

SequenceKvCache::~SequenceKvCache() {
  if (budget_ != nullptr && reserved_bytes_ > 0) {
    budget_->Release(reserved_bytes_);
  }
}

absl::Status SequenceKvCache::Reserve(int64_t tokens) {
  if (tokens <= capacity_) return absl::OkStatus();
  if (tokens > max_tokens_) {
    return absl::OutOfRangeError(
        absl::StrCat("sequence of ", tokens,
                     " tokens exceeds the model's context of ", max_tokens_));
  }
  // Grow geometrically so a long decode re-copies O(length) in total.
  const int64_t new_capacity =
      std::min(max_tokens_, std::max({tokens, 2 * capacity_, int64_t{16}}));
  const int64_t bytes_per_token =
      2 * num_layers() * num_kv_heads_ * head_dim_ * at::elementSize(dtype_);
  const int64_t new_bytes = new_capacity * bytes_per_token;
  if (budget_ != nullptr) {
    absl::Status s = budget_->Reserve(new_bytes - reserved_bytes_);
    if (!s.ok()) return s;
  }
  // Allocate everything before changing any state, so a failed allocation
  // (an exception the caller's TorchCall turns into a Status) leaves the
  // cache as it was; the budget taken above is given back.
  std::vector<at::Tensor> k(num_layers()), v(num_layers());
  try {
    const auto opts = at::TensorOptions().dtype(dtype_);
    for (int64_t l = 0; l < num_layers(); ++l) {
      k[l] = at::empty({num_kv_heads_, new_capacity, head_dim_}, opts);
      v[l] = at::empty({num_kv_heads_, new_capacity, head_dim_}, opts);
      if (length_ > 0) {
        k[l].narrow(1, 0, length_).copy_(k_[l].narrow(1, 0, length_));
        v[l].narrow(1, 0, length_).copy_(v_[l].narrow(1, 0, length_));
      }
    }
  } catch (...) {
    if (budget_ != nullptr) budget_->Release(new_bytes - reserved_bytes_);
    throw;
  }
  k_ = std::move(k);
  v_ = std::move(v);
  reserved_bytes_ = new_bytes;
  capacity_ = new_capacity;
  return absl::OkStatus();
}

std::pair<at::Tensor, at::Tensor> SequenceKvCache::Append(int64_t layer,
                                                          const at::Tensor& k,
                                                          const at::Tensor& v) {
  const int64_t n = k.size(1);
  if (length_ + n > capacity_) std::abort();  // Caller skipped Reserve().
  k_[layer].narrow(1, length_, n).copy_(k);
  v_[layer].narrow(1, length_, n).copy_(v);
  return {k_[layer].narrow(1, 0, length_ + n),
          v_[layer].narrow(1, 0, length_ + n)};
}

void SequenceKvCache::Commit(int64_t n) {
  if (length_ + n > capacity_) std::abort();
  length_ += n;
}

void SequenceKvCache::Truncate(int64_t length) {
  length_ = std::clamp<int64_t>(length, 0, length_);
}

}  // namespace edgesplit
