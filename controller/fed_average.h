// Split federated learning: the controller averages the device-side LoRA
// adapters of a job's devices every K steps (the fed server of SplitFed /
// SplitLoRA; the servers' side is shared and needs no averaging).
//
// How LoRA factors are averaged. Each factor separately, weighted by the
// devices' sample counts n_i (w_i = n_i / sum n):
//     A = sum_i w_i A_i,   B = sum_i w_i B_i.
// This is FedAvg on the adapter's parameters. It is NOT the average of the
// devices' weight updates: the averaged adapter adds
//     s * B A = s * sum_i sum_j w_i w_j B_i A_j,
// whereas the mean update is s * sum_i w_i B_i A_i; the cross terms
// B_i A_j (i != j) differ. Averaging the products exactly would need rank
// up to (devices x r) and would change the adapter's shape every round;
// averaging the factors keeps rank r and the PEFT format, and because all
// devices restart from the same factors after every round, A_i and B_i
// stay close and the cross terms stay close to the mean update (the
// choice of FedAvg-style LoRA work; tests check the factor means, and
// that the error of the product is the cross terms).
#ifndef EDGESPLIT_CONTROLLER_FED_AVERAGE_H_
#define EDGESPLIT_CONTROLLER_FED_AVERAGE_H_

#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "edgesplit/v1/controller.pb.h"

namespace edgesplit {

// The controller's gRPC message limit (both directions): a device's
// adapter for averaging is the largest message it handles.
inline constexpr int kMaxControllerMessageBytes = 256 << 20;

// Checks one device's submission: fp32 2-D factors whose bytes match their
// shape, finite values, positive samples. Errors name the field.
absl::Status ValidateAverageRequest(const v1::AverageAdaptersRequest& request);

// The sample-weighted mean of each factor over `requests` (validated, with
// the same factor names and shapes; else INVALID_ARGUMENT naming the
// factor and device).
absl::StatusOr<v1::AverageAdaptersResponse> AverageFactors(
    const std::vector<const v1::AverageAdaptersRequest*>& requests);

// Rounds of averaging. Thread-safe.
class FedAverager {
 public:
  using Done = std::function<void(absl::StatusOr<v1::AverageAdaptersResponse>)>;

  // Rounds hold at most `max_bytes` of submitted adapters together; a
  // submission beyond is refused RESOURCE_EXHAUSTED naming `limit_name`.
  explicit FedAverager(int64_t max_bytes = int64_t{1} << 30,
                       std::string limit_name = "fed_memory_mb")
      : max_bytes_(max_bytes), limit_name_(std::move(limit_name)) {}
  int64_t held_bytes() const {
    absl::MutexLock lock(&mu_);
    return held_bytes_;
  }

  // Adds a device's adapter to its round; when the round has `devices`
  // submissions every caller's `done` gets the average. A round not
  // complete by the earliest caller's `deadline` fails for everyone
  // waiting (DEADLINE_EXCEEDED; checked on every submission and by
  // Expire(), which the controller daemon calls every 100 ms).
  void Submit(const v1::AverageAdaptersRequest& request, absl::Time deadline,
              Done done);
  // Fails rounds whose deadline passed (the controller's periodic tick).
  void Expire(absl::Time now);

 private:
  struct Round {
    uint32_t devices = 0;
    absl::Time deadline = absl::InfiniteFuture();
    std::map<std::string, v1::AverageAdaptersRequest> by_device;
    std::vector<Done> waiting;
    int64_t bytes = 0;  // Of by_device's requests.
  };
  using Key = std::pair<std::string, uint64_t>;  // (job, round)
  // Removes the expired rounds; their callbacks go to `out`.
  void ExpireLocked(absl::Time now, std::vector<std::vector<Done>>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const int64_t max_bytes_;
  const std::string limit_name_;
  mutable absl::Mutex mu_;
  std::map<Key, Round> rounds_ ABSL_GUARDED_BY(mu_);
  int64_t held_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace edgesplit

#endif  // EDGESPLIT_CONTROLLER_FED_AVERAGE_H_
