#include "device_agent/cli/security_commands.h"

#include <cstdlib>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "base/file_util.h"
#include "base/status_macros.h"
#include "security/certs.h"
#include "security/grant.h"
#include "security/token.h"

namespace edgesplit {
namespace cli {

const std::set<std::string> kTlsFlags = {"certs", "ca", "cert", "key", "token"};
const std::set<std::string> kTlsBoolFlags = {"insecure"};

std::set<std::string> WithTls(std::set<std::string> flags) {
  flags.insert(kTlsFlags.begin(), kTlsFlags.end());
  return flags;
}

namespace {

// The files for `stem` from --certs DIR (or $EDGESPLIT_CERTS), each
// overridden by an explicit --ca/--cert/--key.
absl::StatusOr<TlsConfig> FilesFor(const Args& a, const std::string& stem) {
  TlsConfig c;
  if (a.Has("insecure")) {
    if (a.Has("certs") || a.Has("ca") || a.Has("cert") || a.Has("key") ||
        a.Has("token")) {
      return absl::InvalidArgumentError(
          "--insecure together with certificate flags; choose one");
    }
    c.insecure = true;
    return c;
  }
  const char* env = std::getenv("EDGESPLIT_CERTS");
  const std::string dir = a.String("certs", env != nullptr ? env : "");
  if (!dir.empty()) {
    c.ca_file = dir + "/ca.pem";
    c.cert_file = absl::StrCat(dir, "/", stem, ".pem");
    c.key_file = absl::StrCat(dir, "/", stem, ".key");
  }
  c.ca_file = a.String("ca", c.ca_file);
  if (a.Has("token")) {
    // A bearer token instead of a certificate (security/token.h).
    if (a.Has("cert") || a.Has("key")) {
      return absl::InvalidArgumentError(
          "--token together with --cert/--key; choose one");
    }
    c.cert_file.clear();
    c.key_file.clear();
    c.token_file = a.String("token");
    if (c.ca_file.empty()) {
      return absl::InvalidArgumentError(
          "--token needs the cluster CA: --certs DIR or --ca FILE");
    }
    return c;
  }
  c.cert_file = a.String("cert", c.cert_file);
  c.key_file = a.String("key", c.key_file);
  if (c.ca_file.empty() || c.cert_file.empty() || c.key_file.empty()) {
    return absl::InvalidArgumentError(
        "no TLS credentials: pass --certs DIR (from `edgesplit certs init`), "
        "or --ca/--cert/--key, or --insecure (loopback addresses only)");
  }
  return c;
}

absl::StatusOr<std::vector<std::string>> Names(const Args& a,
                                               const std::string& flag) {
  std::vector<std::string> names;
  if (!a.Has(flag)) return names;
  for (absl::string_view n : absl::StrSplit(a.String(flag), ',')) {
    ES_RETURN_IF_ERROR(CheckIdentityName("--" + flag, std::string(n)));
    names.emplace_back(n);
  }
  return names;
}

// certs token: a device bearer token signed with DIR/grant.key.
absl::Status TokenCommand(const Args& a, const std::string& dir,
                          const std::string& cluster, int64_t days,
                          std::ostream& out) {
  ES_ASSIGN_OR_RETURN(std::string device, a.RequiredString("device"));
  ES_RETURN_IF_ERROR(CheckIdentityName("--device", device));
  ES_ASSIGN_OR_RETURN(auto signer,
                      GrantSigner::FromPemFile(dir + "/grant.key"));
  const absl::Time now = absl::Now();
  ES_ASSIGN_OR_RETURN(
      std::string token,
      IssueDeviceToken(*signer, cluster, device, absl::Hours(24 * days), now));
  const std::string file =
      a.String("out", absl::StrCat(dir, "/device-", device, ".token"));
  if (!a.Has("force") && std::ifstream(file).good()) {
    return absl::AlreadyExistsError(
        absl::StrCat(file, " exists; --force replaces it"));
  }
  ES_RETURN_IF_ERROR(WriteFileAtomically(file, token + "\n", 0600));
  ES_ASSIGN_OR_RETURN(v1::DeviceToken t, ParseDeviceToken(token));
  out << "wrote " << file << ": a bearer token of device " << device
      << " (cluster " << cluster << ", id " << t.token_id() << ", expires "
      << absl::FormatTime(absl::FromUnixSeconds(t.expires_unix()))
      << ")\nwhoever holds it is that device: revoke it by listing its id "
         "in the controller's revoked_tokens\n";
  return absl::OkStatus();
}

}  // namespace

absl::Status ApplyTlsFlags(const Args& a, const std::string& device_name,
                           DeviceAgentOptions* o) {
  ES_ASSIGN_OR_RETURN(TlsConfig c, FilesFor(a, "device-" + device_name));
  o->insecure = c.insecure;
  o->tls.ca_file = c.ca_file;
  o->tls.cert_file = c.cert_file;
  o->tls.key_file = c.key_file;
  o->tls.token_file = c.token_file;
  return absl::OkStatus();
}

absl::StatusOr<TlsConfig> AdminTlsConfig(const Args& a) {
  return FilesFor(a, "admin-operator");
}

std::set<std::string> CertsFlags(const std::string& sub) {
  if (sub == "init") return {"cluster", "out", "nodes", "devices", "days"};
  if (sub == "token") return {"dir", "device", "days", "out"};
  return {"dir", "node", "device", "admin", "days"};
}

absl::Status CertsCommand(const std::string& sub, const Args& a,
                          std::ostream& out) {
  ES_ASSIGN_OR_RETURN(int64_t days, a.Int("days", sub == "token" ? 30 : 365));
  if (days <= 0 || days > 100 * 365) {
    return absl::InvalidArgumentError("--days must be in [1, 36500]");
  }
  if (sub == "init") {
    ClusterCertsSpec spec;
    ES_ASSIGN_OR_RETURN(spec.cluster, a.RequiredString("cluster"));
    ES_ASSIGN_OR_RETURN(std::string dir, a.RequiredString("out"));
    ES_ASSIGN_OR_RETURN(spec.nodes, Names(a, "nodes"));
    ES_ASSIGN_OR_RETURN(spec.devices, Names(a, "devices"));
    spec.days = static_cast<int>(days);
    spec.overwrite = a.Has("force");
    ES_RETURN_IF_ERROR(WriteClusterCerts(spec, dir));
    out << "wrote the CA of cluster " << spec.cluster << " and certificates ("
        << "controller, admin-operator" << (spec.nodes.empty() ? "" : ", node-")
        << absl::StrJoin(spec.nodes, ", node-")
        << (spec.devices.empty() ? "" : ", device-")
        << absl::StrJoin(spec.devices, ", device-") << ") to " << dir
        << "\nkeep " << dir << "/ca.key offline; hand each daemon only its "
        << "own .pem/.key and ca.pem\n";
    return absl::OkStatus();
  }
  ES_ASSIGN_OR_RETURN(std::string dir, a.RequiredString("dir"));
  ES_ASSIGN_OR_RETURN(std::string ca_pem, ReadFile(dir + "/ca.pem"));
  ES_ASSIGN_OR_RETURN(std::string cluster, CaCluster(ca_pem));
  if (sub == "token") return TokenCommand(a, dir, cluster, days, out);
  const int roles = a.Has("node") + a.Has("device") + a.Has("admin");
  if (roles != 1) {
    return absl::InvalidArgumentError(
        "certs issue takes exactly one of --node, --device, --admin");
  }
  Identity id = a.Has("node")     ? NodeIdentity(cluster, a.String("node"))
                : a.Has("device") ? DeviceIdentity(cluster, a.String("device"))
                                  : AdminIdentity(cluster, a.String("admin"));
  ES_RETURN_IF_ERROR(CheckIdentityName("name", id.name));
  ES_RETURN_IF_ERROR(
      IssueIntoDir(dir, id, static_cast<int>(days), a.Has("force")));
  out << "wrote " << dir << "/" << CertFileStem(id) << ".pem and .key ("
      << id.SpiffeId() << ")\n";
  return absl::OkStatus();
}

}  // namespace cli
}  // namespace edgesplit
