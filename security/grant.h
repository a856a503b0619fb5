// Route grants: the controller signs what it allowed each session (its
// device, model, adapter, codec and route, until an expiry) with Ed25519;
// every hop verifies the grant before it opens the session and forwards
// only along the route the grant names, so a server cannot be made to
// connect anywhere a caller likes, and a session's route cannot be edited
// after the controller chose it.
//
// The signature covers the grant's exact bytes (with a domain prefix), so
// nothing depends on re-serialising a message identically.
#ifndef EDGESPLIT_SECURITY_GRANT_H_
#define EDGESPLIT_SECURITY_GRANT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "edgesplit/v1/stage.pb.h"
#include "security/identity.h"

namespace edgesplit {

// Routes longer than this are refused by default (signer and every hop).
inline constexpr int kDefaultMaxRouteHops = 16;
// Signed grants larger than this are refused before parsing.
inline constexpr size_t kMaxGrantBytes = 64 << 10;

// An Ed25519 key pair: the private key as PKCS#8 PEM, the public one raw.
struct GrantKeyPair {
  std::string private_pem;
  std::string public_raw;  // 32 bytes.
};
absl::StatusOr<GrantKeyPair> NewGrantKeyPair();

// Thread-safe (immutable once made).
class GrantSigner {
 public:
  // An Ed25519 private key in PEM; errors name `source`.
  static absl::StatusOr<std::unique_ptr<GrantSigner>> FromPem(
      const std::string& pem, const std::string& source);
  static absl::StatusOr<std::unique_ptr<GrantSigner>> FromPemFile(
      const std::string& path);
  ~GrantSigner();

  absl::StatusOr<v1::SignedGrant> Sign(const v1::RouteGrant& grant) const;
  // The Ed25519 signature of `domain` + `bytes`. Each kind of signed
  // object has its own domain, so no signature passes for another kind.
  absl::StatusOr<std::string> SignBytes(absl::string_view domain,
                                        const std::string& bytes) const;
  const std::string& public_key() const { return public_raw_; }

 private:
  struct Key;
  GrantSigner(std::unique_ptr<Key> key, std::string public_raw);
  std::unique_ptr<Key> key_;
  std::string public_raw_;
};

// Thread-safe (immutable once made).
class GrantVerifier {
 public:
  static absl::StatusOr<std::unique_ptr<GrantVerifier>> FromPublicKey(
      const std::string& raw);
  ~GrantVerifier();

  // Untrusted input: checks size and signature first, then parses and
  // checks the grant's shape (version, session id, a non-empty route).
  // PermissionDenied for a bad signature, InvalidArgument for malformed.
  absl::StatusOr<v1::RouteGrant> Verify(const v1::SignedGrant& grant) const;
  // Whether `signature` is this key's over `domain` + `bytes`.
  bool VerifyBytes(absl::string_view domain, const std::string& bytes,
                   const std::string& signature) const;

 private:
  struct Key;
  explicit GrantVerifier(std::unique_ptr<Key> key);
  std::unique_ptr<Key> key_;
};

// The grant inside signed bytes, shape-checked (version, session id, a
// non-empty route). Verify() calls it after the signature; exposed for
// the fuzz target, which cannot forge signatures to reach it.
absl::StatusOr<v1::RouteGrant> ParseGrant(const std::string& bytes);

// Whether `open`, arriving at node `node` from `caller` at `now`, is what
// `grant` allows (see RouteGrant in stage.proto). An unauthenticated
// caller (insecure transport) is not checked against the grant's names.
absl::Status CheckGrantForHop(const v1::RouteGrant& grant,
                              const v1::OpenSession& open,
                              const std::string& node, const Peer& caller,
                              absl::Time now,
                              int max_hops = kDefaultMaxRouteHops);

}  // namespace edgesplit

#endif  // EDGESPLIT_SECURITY_GRANT_H_
