// Device bearer tokens: a device that cannot hold a client certificate (a
// browser, an app whose platform keeps no private keys) authenticates with
// a token instead, sent on every call as
//
//   authorization: Bearer esdt1.<token>.<signature>
//
// over a TLS channel that authenticates the server (the device trusts the
// cluster CA as with certificates). The token names the device and its
// cluster and expires; the controller's grant key (Ed25519) signs it, so
// the controller and every server (which receive the key's public half
// with their plans) verify it without a lookup. `edgesplit certs token`
// issues one. A token is a bearer secret: whoever holds it is the device
// until it expires or the controller lists its id in `revoked_tokens:`
// (servers accept a revoked token's calls only with a route grant, which
// the controller no longer issues to it).
#ifndef EDGESPLIT_SECURITY_TOKEN_H_
#define EDGESPLIT_SECURITY_TOKEN_H_

#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "edgesplit/v1/stage.pb.h"
#include "security/grant.h"
#include "security/identity.h"

namespace edgesplit {

inline constexpr char kDeviceTokenPrefix[] = "esdt1.";
// Longer tokens are refused before decoding.
inline constexpr size_t kMaxDeviceTokenBytes = 2048;

// A token for device `device` of `cluster`, valid from `now` for `ttl`.
absl::StatusOr<std::string> IssueDeviceToken(const GrantSigner& signer,
                                             const std::string& cluster,
                                             const std::string& device,
                                             absl::Duration ttl,
                                             absl::Time now);

// The token's contents, shape-checked but NOT verified: what a device
// reads from its own token file to learn its name. Untrusted input.
absl::StatusOr<v1::DeviceToken> ParseDeviceToken(absl::string_view text);

// The token's contents if `verifier` signed it, it is of `cluster` and
// valid at `now`: Unauthenticated otherwise, naming why (never echoing
// the secret).
absl::StatusOr<v1::DeviceToken> VerifyDeviceToken(const GrantVerifier& verifier,
                                                  absl::string_view text,
                                                  const std::string& cluster,
                                                  absl::Time now);

// A server's check of the tokens devices present. Thread-safe: the
// controller link sets the key as plans arrive; call threads check.
class TokenAuthority {
 public:
  explicit TokenAuthority(std::string cluster) : cluster_(std::move(cluster)) {}

  // The controller's grant public key (raw, 32 bytes). A bad key is an
  // error and leaves the previous one; "" forgets it.
  absl::Status SetPublicKey(const std::string& raw);

  // The device an "authorization" header value names, as a Peer.
  // Unauthenticated when the header is not a valid token or no key is
  // known yet.
  absl::StatusOr<Peer> Authenticate(absl::string_view authorization,
                                    absl::Time now) const;

 private:
  const std::string cluster_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const GrantVerifier> verifier_ ABSL_GUARDED_BY(mu_);
};

}  // namespace edgesplit

#endif  // EDGESPLIT_SECURITY_TOKEN_H_
