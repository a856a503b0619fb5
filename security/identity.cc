#include "security/identity.h"

#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace edgesplit {
namespace {

constexpr char kScheme[] = "spiffe://";

const char* KindPath(Identity::Kind kind) {
  switch (kind) {
    case Identity::Kind::kController:
      return "controller";
    case Identity::Kind::kNode:
      return "node";
    case Identity::Kind::kDevice:
      return "device";
    case Identity::Kind::kAdmin:
      return "admin";
  }
  return "?";
}

Identity Make(const std::string& cluster, Identity::Kind kind,
              const std::string& name) {
  Identity id;
  id.cluster = cluster;
  id.kind = kind;
  id.name = name;
  return id;
}

}  // namespace

std::string Identity::SpiffeId() const {
  if (kind == Kind::kController)
    return absl::StrCat(kScheme, cluster, "/controller");
  return absl::StrCat(kScheme, cluster, "/", KindPath(kind), "/", name);
}

std::string Identity::DnsName() const {
  if (kind == Kind::kController) return absl::StrCat("controller.", cluster);
  return absl::StrCat(name, ".", KindPath(kind), ".", cluster);
}

std::string Identity::ToString() const {
  if (kind == Kind::kController) return "controller";
  return absl::StrCat(KindPath(kind), " ", name);
}

Identity ControllerIdentity(const std::string& cluster) {
  return Make(cluster, Identity::Kind::kController, "");
}
Identity NodeIdentity(const std::string& cluster, const std::string& name) {
  return Make(cluster, Identity::Kind::kNode, name);
}
Identity DeviceIdentity(const std::string& cluster, const std::string& name) {
  return Make(cluster, Identity::Kind::kDevice, name);
}
Identity AdminIdentity(const std::string& cluster, const std::string& name) {
  return Make(cluster, Identity::Kind::kAdmin, name);
}

absl::Status CheckIdentityName(const std::string& what,
                               const std::string& name) {
  bool ok = !name.empty() && name.size() <= 64 && name[0] != '.';
  for (char c : name) {
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-');
  }
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(what, " \"", name,
                   "\" must be 1-64 of [A-Za-z0-9._-], not starting with '.'"));
}

absl::StatusOr<Identity> ParseSpiffeId(const std::string& uri) {
  auto bad = [&](const std::string& why) {
    return absl::InvalidArgumentError(
        absl::StrCat("SPIFFE ID \"", uri, "\": ", why));
  };
  if (!absl::StartsWith(uri, kScheme)) return bad("not spiffe://");
  std::vector<std::string> parts =
      absl::StrSplit(uri.substr(sizeof(kScheme) - 1), '/');
  if (parts.size() < 2) return bad("no path");
  if (!CheckIdentityName("cluster", parts[0]).ok()) {
    return bad("bad cluster name");
  }
  if (parts.size() == 2 && parts[1] == "controller") {
    return ControllerIdentity(parts[0]);
  }
  if (parts.size() != 3) {
    return bad("expected /controller, /node/NAME, /device/NAME or /admin/NAME");
  }
  if (!CheckIdentityName("name", parts[2]).ok()) return bad("bad name");
  for (Identity::Kind k : {Identity::Kind::kNode, Identity::Kind::kDevice,
                           Identity::Kind::kAdmin}) {
    if (parts[1] == KindPath(k)) return Make(parts[0], k, parts[2]);
  }
  return bad(absl::StrCat("unknown role \"", parts[1], "\""));
}

absl::Status CheckPeerIs(const Peer& peer, const Identity& who) {
  if (!peer.authenticated || peer.identity == who) return absl::OkStatus();
  return absl::PermissionDeniedError(
      absl::StrCat("caller is ", peer.identity.ToString(), ", not ",
                   who.ToString(), " (", peer.identity.SpiffeId(), ")"));
}

absl::Status CheckPeerNamed(const Peer& peer, Identity::Kind kind,
                            const std::string& name) {
  if (!peer.authenticated) return absl::OkStatus();
  return CheckPeerIs(peer, Make(peer.identity.cluster, kind, name));
}

absl::Status CheckPeerKind(const Peer& peer, Identity::Kind kind,
                           const std::string& action) {
  if (!peer.authenticated || peer.identity.kind == kind) {
    return absl::OkStatus();
  }
  return absl::PermissionDeniedError(
      absl::StrCat(peer.identity.ToString(), " may not ", action, " (only a ",
                   KindPath(kind), " may)"));
}

}  // namespace edgesplit
