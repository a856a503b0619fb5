// The edge server's check of route grants (security/grant.h): the
// controller's public key arrives with the plans; every OpenSession is
// checked against its grant before the session exists.
#ifndef EDGESPLIT_EDGE_SERVER_GRANT_GATE_H_
#define EDGESPLIT_EDGE_SERVER_GRANT_GATE_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "edgesplit/v1/stage.pb.h"
#include "security/grant.h"
#include "security/identity.h"

namespace edgesplit {

// Thread-safe: the controller link sets the key, session threads check.
class GrantGate {
 public:
  // `required`: every open must carry a valid grant (servers running
  // mutual TLS); otherwise grants are checked only when both a key and a
  // grant are present (plaintext test rigs).
  explicit GrantGate(bool required, int max_hops = kDefaultMaxRouteHops)
      : required_(required), max_hops_(max_hops) {}

  // The controller's key from a plan update ("" = it signs none). A bad
  // key is an error and leaves the previous one.
  absl::Status SetPublicKey(const std::string& raw);

  // OK when `open`, from `caller`, may open a session at `node` now.
  absl::Status Check(const v1::OpenSession& open, const std::string& node,
                     const Peer& caller) const;

 private:
  const bool required_;
  const int max_hops_;
  mutable absl::Mutex mu_;
  std::string key_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<const GrantVerifier> verifier_ ABSL_GUARDED_BY(mu_);
};

}  // namespace edgesplit

#endif  // EDGESPLIT_EDGE_SERVER_GRANT_GATE_H_
