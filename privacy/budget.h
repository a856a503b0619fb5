// A user's privacy budget on the device: the Rényi DP spent so far by
// every mechanism that used the user's data (summed per order, which is
// how RDP composes over steps and sessions), the (ε, δ) limit it may not
// exceed, and a file that keeps the spending across restarts. Work that
// would exceed the limit is refused before anything is released.
//
// File (JSON, rewritten atomically and durably after every charge):
//   {"orders": [1.25, 1.5, ...], "rdp": [0.01, 0.02, ...]}
#ifndef EDGESPLIT_PRIVACY_BUDGET_H_
#define EDGESPLIT_PRIVACY_BUDGET_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "privacy/rdp_accountant.h"

namespace edgesplit::privacy {

struct BudgetFile {
  std::vector<double> orders;
  std::vector<double> rdp;
};

// Parses a budget file's text; errors name `path` and the field.
absl::StatusOr<BudgetFile> ParseBudgetFile(absl::string_view text,
                                           const std::string& path);

// Thread-safe.
class PrivacyBudget {
 public:
  // Reads `path` (absent: nothing spent yet, over DefaultOrders()).
  // `epsilon_limit` > 0 and `delta` in (0, 1) bound what may be spent.
  static absl::StatusOr<std::unique_ptr<PrivacyBudget>> Open(
      std::string path, double epsilon_limit, double delta);

  // Spends `rdp` more (per order, as RdpAccountant::rdp()) if the total
  // stays within the limit, writing the file before returning; the new
  // total's ε. RESOURCE_EXHAUSTED naming ε spent, asked and the limit
  // otherwise (nothing recorded).
  absl::StatusOr<EpsilonAt> Charge(const std::vector<double>& rdp);
  // What `rdp` more would bring the total to (nothing recorded).
  absl::StatusOr<EpsilonAt> WouldSpend(const std::vector<double>& rdp) const;
  EpsilonAt Spent() const;
  const std::vector<double>& orders() const { return orders_; }
  double epsilon_limit() const { return epsilon_limit_; }
  double delta() const { return delta_; }

 private:
  PrivacyBudget(std::string path, double epsilon_limit, double delta)
      : path_(std::move(path)), epsilon_limit_(epsilon_limit), delta_(delta) {}
  absl::StatusOr<EpsilonAt> TotalLocked(const std::vector<double>& more) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string path_;
  const double epsilon_limit_;
  const double delta_;
  std::vector<double> orders_;  // Fixed at Open.
  mutable absl::Mutex mu_;
  std::vector<double> rdp_ ABSL_GUARDED_BY(mu_);
};

}  // namespace edgesplit::privacy

#endif  // EDGESPLIT_PRIVACY_BUDGET_H_
