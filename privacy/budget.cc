#include "privacy/budget.h"

#include <cmath>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "base/file_util.h"
#include "base/json_util.h"
#include "base/status_macros.h"

namespace edgesplit::privacy {
namespace {

constexpr size_t kMaxOrders = 4096;

absl::StatusOr<std::vector<double>> Numbers(const nlohmann::json& j,
                                            const std::string& path,
                                            const char* field) {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": field \"", field, "\": ", why));
  };
  if (!j.is_object() || !j.contains(field)) return bad("missing");
  const nlohmann::json& v = j[field];
  if (!v.is_array() || v.empty() || v.size() > kMaxOrders) {
    return bad(absl::StrCat("expected a list of 1 to ", kMaxOrders,
                            " numbers, got ", DescribeJson(v)));
  }
  std::vector<double> out;
  for (const nlohmann::json& x : v) {
    if (!x.is_number()) return bad("expected numbers, got " + DescribeJson(x));
    const double d = x.get<double>();
    if (!std::isfinite(d) || d < 0) {
      return bad(absl::StrCat("value ", d, " is not finite and >= 0"));
    }
    out.push_back(d);
  }
  return out;
}

}  // namespace

absl::StatusOr<BudgetFile> ParseBudgetFile(absl::string_view text,
                                           const std::string& path) {
  ES_ASSIGN_OR_RETURN(nlohmann::json j, ParseUntrustedJson(text, path));
  BudgetFile f;
  ES_ASSIGN_OR_RETURN(f.orders, Numbers(j, path, "orders"));
  ES_ASSIGN_OR_RETURN(f.rdp, Numbers(j, path, "rdp"));
  if (f.orders.size() != f.rdp.size()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", f.orders.size(),
                                                   " orders but ", f.rdp.size(),
                                                   " rdp values"));
  }
  for (double a : f.orders) {
    if (!(a > 1)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": field \"orders\": order ", a, " is not > 1"));
    }
  }
  return f;
}

absl::StatusOr<std::unique_ptr<PrivacyBudget>> PrivacyBudget::Open(
    std::string path, double epsilon_limit, double delta) {
  if (!(epsilon_limit > 0) || !(delta > 0 && delta < 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("privacy budget: epsilon ", epsilon_limit, " and delta ",
                     delta, " must be > 0 and in (0, 1)"));
  }
  auto b = std::unique_ptr<PrivacyBudget>(
      new PrivacyBudget(std::move(path), epsilon_limit, delta));
  std::error_code ec;
  absl::MutexLock lock(&b->mu_);
  if (!std::filesystem::exists(b->path_, ec)) {
    b->orders_ = DefaultOrders();
    b->rdp_.assign(b->orders_.size(), 0);
    return b;
  }
  ES_ASSIGN_OR_RETURN(std::string text, ReadFile(b->path_));
  ES_ASSIGN_OR_RETURN(BudgetFile f, ParseBudgetFile(text, b->path_));
  b->orders_ = std::move(f.orders);
  b->rdp_ = std::move(f.rdp);
  return b;
}

absl::StatusOr<EpsilonAt> PrivacyBudget::TotalLocked(
    const std::vector<double>& more) const {
  if (more.size() != orders_.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("privacy budget ", path_, ": RDP of ", more.size(),
                     " orders charged to ", orders_.size()));
  }
  std::vector<double> total = rdp_;
  for (size_t i = 0; i < more.size(); ++i) {
    if (!(more[i] >= 0)) {
      return absl::InvalidArgumentError(
          absl::StrCat("privacy budget: RDP value ", more[i]));
    }
    total[i] += more[i];
  }
  return EpsilonFromRdp(orders_, total, delta_);
}

absl::StatusOr<EpsilonAt> PrivacyBudget::WouldSpend(
    const std::vector<double>& rdp) const {
  absl::MutexLock lock(&mu_);
  return TotalLocked(rdp);
}

absl::StatusOr<EpsilonAt> PrivacyBudget::Charge(
    const std::vector<double>& rdp) {
  absl::MutexLock lock(&mu_);
  ES_ASSIGN_OR_RETURN(EpsilonAt after, TotalLocked(rdp));
  if (after.epsilon > epsilon_limit_) {
    ES_ASSIGN_OR_RETURN(EpsilonAt now, EpsilonFromRdp(orders_, rdp_, delta_));
    return absl::ResourceExhaustedError(
        absl::StrCat("privacy budget exhausted: spent epsilon ", now.epsilon,
                     ", this would bring it to ", after.epsilon, " (limit ",
                     epsilon_limit_, " at delta ", delta_, "; ", path_, ")"));
  }
  std::vector<double> total = rdp_;
  for (size_t i = 0; i < rdp.size(); ++i) total[i] += rdp[i];
  nlohmann::json j = {{"orders", orders_}, {"rdp", total}};
  // Durable before the data leaves: a crash after this may over-count
  // spending, never under-count it.
  ES_RETURN_IF_ERROR(WriteFileAtomically(path_, j.dump() + "\n", 0600));
  rdp_ = std::move(total);
  return after;
}

EpsilonAt PrivacyBudget::Spent() const {
  absl::MutexLock lock(&mu_);
  auto e = EpsilonFromRdp(orders_, rdp_, delta_);
  return e.ok() ? *e : EpsilonAt{INFINITY, 0};
}

}  // namespace edgesplit::privacy
