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
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/yaml_util.h"
#include "edgesplit/v1/controller.pb.h"

namespace edgesplit {

// The controller's gRPC message limit (both directions): a device's
// adapter for averaging is the largest message it handles.
inline constexpr int kMaxControllerMessageBytes = 256 << 20;

// Checks one device's submission: fp32 2-D factors whose bytes match their
// shape, finite values, positive samples (none and no factors when it sat
// the round out), participants within devices, finite reports. Errors
// name the field.
absl::Status ValidateAverageRequest(const v1::AverageAdaptersRequest& request);

// The sample-weighted mean of each factor over `requests` (validated, with
// the same factor names and shapes; else INVALID_ARGUMENT naming the
// factor and device).
absl::StatusOr<v1::AverageAdaptersResponse> AverageFactors(
    const std::vector<const v1::AverageAdaptersRequest*>& requests);

// Client selection (the controller's `fed_selection:` section): which
// devices' adapters each round averages. A device's cost is
//     noise_weight * noise_std / mean(noise_std)
//   + link_weight  * seconds_per_window / mean(seconds_per_window),
// means over the job's devices' latest reports (a term is 0 when its mean
// is); the `per_round` cheapest are averaged (ties by name) and train the
// next round's updates; the rest sit them out, report without factors and
// adopt the average. Noisy uploads (a device spending a small privacy
// budget) put noise in everyone's adapter that averaging over few devices
// does not remove, and a device on a slow link paces every update (the
// servers' step barrier waits for it). The first round of a run (and any
// after reports that do not name exactly the job's devices) is trained by
// every device; its average already takes only the selection when every
// device's report is in (docs/privacy.md).
struct FedSelection {
  int per_round = 0;  // 0 or >= the job's devices: every device.
  double noise_weight = 1;
  double link_weight = 1;
};

//   fed_selection: {per_round: 2, noise_weight: 1, link_weight: 1}
// Errors name the file and field.
absl::StatusOr<FedSelection> ParseFedSelection(const YamlReader& r,
                                               const YAML::Node& root);

// The `per_round` cheapest of `reports` (device -> {noise_std,
// seconds_per_window}) as FedSelection prices them.
std::vector<std::string> SelectDevices(
    const FedSelection& selection,
    const std::map<std::string, std::pair<double, double>>& reports);

// Rounds of averaging. Thread-safe.
class FedAverager {
 public:
  using Done = std::function<void(absl::StatusOr<v1::AverageAdaptersResponse>)>;

  // Rounds hold at most `max_bytes` of submitted adapters together; a
  // submission beyond is refused RESOURCE_EXHAUSTED naming `limit_name`.
  explicit FedAverager(int64_t max_bytes = int64_t{1} << 30,
                       std::string limit_name = "fed_memory_mb",
                       FedSelection selection = {})
      : max_bytes_(max_bytes),
        limit_name_(std::move(limit_name)),
        selection_(selection) {}
  int64_t held_bytes() const {
    absl::MutexLock lock(&mu_);
    return held_bytes_;
  }

  // Adds a device's adapter to its round; when the round's `participants`
  // (all `devices` when 0) have sent their factors, every caller's `done`
  // gets the average, and devices that sat the round out (`sat_out`) and
  // come later get it at once. A round not complete by the earliest
  // participant's `deadline` fails for everyone waiting
  // (DEADLINE_EXCEEDED; checked on every submission and by Expire(),
  // which the controller daemon calls every 100 ms); a device sitting it
  // out waits until its own deadline and may send again.
  void Submit(const v1::AverageAdaptersRequest& request, absl::Time deadline,
              Done done);
  // Fails rounds whose deadline passed (the controller's periodic tick).
  void Expire(absl::Time now);

 private:
  struct Waiter {
    Done done;
    absl::Time deadline;  // Its own (a device sitting the round out).
    std::string device;   // Such a device's name ("" for the others).
  };
  struct Round {
    uint32_t devices = 0;
    uint32_t participants = 0;  // Whose factors it averages.
    // The earliest deadline of the participants that sent their factors.
    absl::Time deadline = absl::InfiniteFuture();
    std::set<std::string> answered;  // Devices that sent this round.
    std::map<std::string, v1::AverageAdaptersRequest> by_device;
    std::vector<Waiter> waiting;
    // Once complete: the average, kept for the devices still to come.
    std::optional<v1::AverageAdaptersResponse> result;
    int64_t bytes = 0;  // Of by_device's requests, or of the result.
  };
  // A job's latest report per device ({noise_std, seconds_per_window})
  // and the selection for its next round.
  struct Job {
    std::map<std::string, std::pair<double, double>> reports;
    std::vector<std::string> next;
    absl::Time used;
  };
  using Key = std::pair<std::string, uint64_t>;  // (job, round)
  // Records the request in its round; the callbacks to run go to `ready`
  // (with `result`); a refusal is returned (and `done` left to the caller).
  absl::Status AddLocked(const v1::AverageAdaptersRequest& request,
                         absl::Time deadline, Done* done,
                         std::vector<Done>* ready,
                         absl::StatusOr<v1::AverageAdaptersResponse>* result)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Averages a round whose participants all sent their factors.
  void CompleteLocked(Job& job, Round& round, std::vector<Done>* ready,
                      absl::StatusOr<v1::AverageAdaptersResponse>* result)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  Job& JobLocked(const std::string& id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes the expired rounds, and the expired waits of devices sitting
  // a round out; their callbacks go to `out`.
  void ExpireLocked(absl::Time now, std::vector<Done>* out)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static void Fail(std::vector<Done>& expired);

  const int64_t max_bytes_;
  const std::string limit_name_;
  const FedSelection selection_;
  mutable absl::Mutex mu_;
  std::map<Key, Round> rounds_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, Job> jobs_ ABSL_GUARDED_BY(mu_);
  int64_t held_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace edgesplit

#endif  // EDGESPLIT_CONTROLLER_FED_AVERAGE_H_
