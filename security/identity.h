// Who a peer is: the SPIFFE ID in its certificate's URI SAN,
//
//   spiffe://<cluster>/controller          the controller
//   spiffe://<cluster>/node/<name>         an edge server (its plan name)
//   spiffe://<cluster>/device/<name>       a device
//   spiffe://<cluster>/admin/<name>        an operator's tools
//
// SPIFFE rather than DNS names: nodes move between addresses (and sit
// behind relays), while a plan names them; one URI says both the cluster
// (the trust domain) and the role, and gRPC exposes it as `peer_spiffe_id`.
#ifndef EDGESPLIT_SECURITY_IDENTITY_H_
#define EDGESPLIT_SECURITY_IDENTITY_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace edgesplit {

struct Identity {
  enum class Kind { kController, kNode, kDevice, kAdmin };
  std::string cluster;
  Kind kind = Kind::kNode;
  std::string name;  // Empty for the controller.

  std::string SpiffeId() const;
  // "server-a.node.lab", "controller.lab": a DNS SAN beside the SPIFFE ID,
  // which clients send as the TLS server name (SNI) so servers find it.
  std::string DnsName() const;
  // "node server-a", "device phone-1", "controller": for messages.
  std::string ToString() const;
  friend bool operator==(const Identity& a, const Identity& b) {
    return a.cluster == b.cluster && a.kind == b.kind && a.name == b.name;
  }
};

Identity ControllerIdentity(const std::string& cluster);
Identity NodeIdentity(const std::string& cluster, const std::string& name);
Identity DeviceIdentity(const std::string& cluster, const std::string& name);
Identity AdminIdentity(const std::string& cluster, const std::string& name);

// Cluster and names: 1-64 of [A-Za-z0-9._-], not starting with '.'.
absl::Status CheckIdentityName(const std::string& what,
                               const std::string& name);
// Parses a SPIFFE ID of the forms above; errors quote the value.
absl::StatusOr<Identity> ParseSpiffeId(const std::string& uri);

// The caller of an RPC as the server's transport saw it. `authenticated`
// is false only on a server running insecure (plaintext, loopback only),
// where every caller is trusted and `identity` is empty.
struct Peer {
  bool authenticated = false;
  Identity identity;
  // Set when a device authenticated with a bearer token (security/token.h)
  // instead of a certificate: the token's id, for revocation.
  std::string token_id = {};
};

// OK when `peer` may act as `who`: unauthenticated peers (insecure mode)
// always may; otherwise identities must match. The error is
// PermissionDenied naming both.
absl::Status CheckPeerIs(const Peer& peer, const Identity& who);
// OK when `peer` is unauthenticated or is `kind` named `name` (of its
// own cluster): a node may only speak for itself.
absl::Status CheckPeerNamed(const Peer& peer, Identity::Kind kind,
                            const std::string& name);
// OK when `peer` is unauthenticated or of `kind` (any name).
absl::Status CheckPeerKind(const Peer& peer, Identity::Kind kind,
                           const std::string& action);

}  // namespace edgesplit

#endif  // EDGESPLIT_SECURITY_IDENTITY_H_
