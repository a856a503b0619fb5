// What one edge server lets its clients hold: the limits (AdmissionLimits,
// from the server's YAML) and the server-wide budgets sessions take from
// and give back (UsageBudget). Beyond a limit a client gets
// RESOURCE_EXHAUSTED naming it, or (unsent answers) is slowed down; the
// server and its other sessions go on.
#ifndef EDGESPLIT_EDGE_SERVER_ADMISSION_H_
#define EDGESPLIT_EDGE_SERVER_ADMISSION_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace edgesplit {

struct AdmissionLimits {
  // Session streams held at once: in all, and opened by any one device
  // (streams from other servers, which carry many devices' sessions,
  // count only in the total). Beyond either, new streams are refused.
  int max_sessions = 1024;
  int max_sessions_per_device = 64;
  // Answers one stream has not yet put on the wire (a client that does not
  // read): beyond this the server stops reading that stream's requests
  // until its answers drain (backpressure, nothing is dropped).
  int64_t max_unsent_bytes = int64_t{64} << 20;
  // Decoded forward inputs waiting for or in compute, all sessions
  // together.
  int64_t max_pending_input_bytes = int64_t{1} << 30;
  // Tokens of training micro-batches whose forward kept its activations
  // for a backward not yet received, all sessions together.
  int64_t max_kept_training_tokens = int64_t{1} << 20;
  // HTTP/2 streams per connection (a server's link to its next hop carries
  // many sessions: keep this above max_sessions).
  int max_concurrent_streams = 2048;
  // gRPC's own buffers (its resource quota); 0: gRPC's default.
  int64_t grpc_memory_bytes = 0;
};

// A server-wide cap on one quantity (bytes, tokens) that sessions take
// from and give back. Thread-safe. Charges hold a reference: the budget
// lives as long as the last of them.
class UsageBudget : public std::enable_shared_from_this<UsageBudget> {
 public:
  // Gives back what it took when destroyed. Movable.
  class Charge {
   public:
    Charge() = default;
    Charge(Charge&& o) noexcept
        : budget_(std::move(o.budget_)), n_(std::exchange(o.n_, 0)) {}
    Charge& operator=(Charge&& o) noexcept {
      if (this != &o) {
        Reset();
        budget_ = std::move(o.budget_);
        n_ = std::exchange(o.n_, 0);
      }
      return *this;
    }
    ~Charge() { Reset(); }
    void Reset() {
      if (budget_ != nullptr && n_ > 0) budget_->Give(n_);
      budget_.reset();
      n_ = 0;
    }
    int64_t amount() const { return n_; }

   private:
    friend class UsageBudget;
    Charge(std::shared_ptr<UsageBudget> b, int64_t n)
        : budget_(std::move(b)), n_(n) {}
    std::shared_ptr<UsageBudget> budget_;
    int64_t n_ = 0;
  };

  // `limit_name` is the config field errors name, `unit` what is counted.
  static std::shared_ptr<UsageBudget> Create(std::string limit_name,
                                             std::string unit, int64_t limit) {
    return std::shared_ptr<UsageBudget>(
        new UsageBudget(std::move(limit_name), std::move(unit), limit));
  }

  // Takes `n` (>= 0), or fails RESOURCE_EXHAUSTED naming the limit and
  // takes nothing.
  absl::StatusOr<Charge> Take(int64_t n) {
    {
      absl::MutexLock lock(&mu_);
      if (n > limit_ - used_) {
        return absl::ResourceExhaustedError(
            absl::StrCat(n, " ", unit_, " more would exceed this server's ",
                         limit_name_, " (", limit_, "; ", used_, " in use)"));
      }
      used_ += n;
    }
    return Charge(shared_from_this(), n);
  }
  int64_t used() const {
    absl::MutexLock lock(&mu_);
    return used_;
  }
  int64_t limit() const { return limit_; }

 private:
  UsageBudget(std::string limit_name, std::string unit, int64_t limit)
      : limit_name_(std::move(limit_name)),
        unit_(std::move(unit)),
        limit_(limit) {}
  void Give(int64_t n) {
    absl::MutexLock lock(&mu_);
    used_ -= n;
  }

  const std::string limit_name_;
  const std::string unit_;
  const int64_t limit_;
  mutable absl::Mutex mu_;
  int64_t used_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace edgesplit

#endif  // EDGESPLIT_EDGE_SERVER_ADMISSION_H_
