#include "edge_server/grant_gate.h"

#include "absl/time/clock.h"

namespace edgesplit {

absl::Status GrantGate::SetPublicKey(const std::string& raw) {
  std::shared_ptr<const GrantVerifier> verifier;
  if (!raw.empty()) {
    auto v = GrantVerifier::FromPublicKey(raw);
    if (!v.ok()) return v.status();
    verifier = std::move(*v);
  }
  absl::MutexLock lock(&mu_);
  if (raw == key_) return absl::OkStatus();
  key_ = raw;
  verifier_ = std::move(verifier);
  return absl::OkStatus();
}

absl::Status GrantGate::Check(const v1::OpenSession& open,
                              const std::string& node,
                              const Peer& caller) const {
  std::shared_ptr<const GrantVerifier> verifier;
  {
    absl::MutexLock lock(&mu_);
    verifier = verifier_;
  }
  if (verifier == nullptr) {
    if (!required_) return absl::OkStatus();
    return absl::UnavailableError(
        absl::StrCat(node, " has no route-grant key from the controller yet"));
  }
  if (!required_ && open.grant().grant().empty()) return absl::OkStatus();
  auto grant = verifier->Verify(open.grant());
  if (!grant.ok()) return grant.status();
  return CheckGrantForHop(*grant, open, node, caller, absl::Now(), max_hops_);
}

}  // namespace edgesplit
