#include "security/tls.h"

#include <filesystem>
#include <optional>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/file_util.h"
#include "base/status_macros.h"
#include "grpcpp/security/tls_certificate_verifier.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "security/certs.h"

namespace edgesplit {
namespace {

namespace gx = grpc::experimental;

// Accepts a peer certificate (already chained to the CA by gRPC) only if
// its one spiffe:// ID is of `cluster` and, when `want` is set, is exactly
// `want`.
class SpiffeVerifier : public gx::ExternalCertificateVerifier {
 public:
  SpiffeVerifier(std::string cluster, std::optional<Identity> want)
      : cluster_(std::move(cluster)), want_(std::move(want)) {}

  bool Verify(gx::TlsCustomVerificationCheckRequest* request,
              std::function<void(grpc::Status)> /*callback*/,
              grpc::Status* sync_status) override {
    std::vector<std::string> ids;
    for (const grpc::string_ref& u : request->uri_names()) {
      if (absl::StartsWith(absl::string_view(u.data(), u.size()),
                           "spiffe://")) {
        ids.emplace_back(u.data(), u.size());
      }
    }
    *sync_status = Check(ids);
    return true;  // Decided synchronously.
  }
  void Cancel(gx::TlsCustomVerificationCheckRequest*) override {}

 private:
  grpc::Status Check(const std::vector<std::string>& ids) const {
    if (ids.size() != 1) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          absl::StrCat("peer certificate has ", ids.size(),
                                       " spiffe:// IDs, want one"));
    }
    auto id = ParseSpiffeId(ids[0]);
    if (!id.ok()) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                          std::string(id.status().message()));
    }
    if (id->cluster != cluster_) {
      return grpc::Status(
          grpc::StatusCode::UNAUTHENTICATED,
          absl::StrCat("peer ", ids[0], " is not of cluster ", cluster_));
    }
    if (want_ && !(*id == *want_)) {
      return grpc::Status(
          grpc::StatusCode::UNAUTHENTICATED,
          absl::StrCat("peer is ", ids[0], ", expected ", want_->SpiffeId()));
    }
    return grpc::Status::OK;
  }

  const std::string cluster_;
  const std::optional<Identity> want_;
};

std::string HostOf(const std::string& address) {
  std::string host = address;
  if (absl::StartsWith(host, "ipv4:")) host = host.substr(5);
  if (absl::StartsWith(host, "ipv6:")) host = host.substr(5);
  if (absl::StartsWith(host, "dns:///")) host = host.substr(7);
  if (!host.empty() && host[0] == '[') {
    const size_t end = host.find(']');
    return end == std::string::npos ? host : host.substr(1, end - 1);
  }
  const size_t colon = host.rfind(':');
  // "::1" without brackets or a port has more than one colon.
  if (colon != std::string::npos && host.find(':') == colon) {
    host = host.substr(0, colon);
  }
  return host;
}

absl::Status RefuseInsecure(const std::string& what,
                            const std::string& address) {
  return absl::FailedPreconditionError(absl::StrCat(
      "insecure (plaintext) mode ", what, " ", address,
      ", which is not a loopback address: configure tls (ca, cert, key; "
      "`edgesplit certs init` makes them) to use other addresses"));
}

}  // namespace

absl::Status TlsConfig::Validate(const std::string& source) const {
  auto bad = [&](const std::string& field, const std::string& what) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field \"", field, "\": ", what));
  };
  if (insecure) {
    if (!ca_file.empty() || !cert_file.empty() || !key_file.empty()) {
      return bad("insecure", "true together with tls files; choose one");
    }
    return absl::OkStatus();
  }
  if (ca_file.empty() && cert_file.empty() && key_file.empty()) {
    return bad("tls",
               "missing: every channel uses mutual TLS (tls: {ca, cert, key}, "
               "made by `edgesplit certs init`); plaintext only with "
               "`insecure: true` on loopback addresses");
  }
  if (ca_file.empty()) return bad("tls.ca", "missing");
  if (cert_file.empty()) return bad("tls.cert", "missing");
  if (key_file.empty()) return bad("tls.key", "missing");
  if (reload_interval < absl::Seconds(1)) {
    return bad("tls.reload_s", "must be at least 1");
  }
  return absl::OkStatus();
}

absl::StatusOr<TlsConfig> ParseTlsConfig(const YamlReader& r,
                                         const YAML::Node& root) {
  TlsConfig c;
  ES_ASSIGN_OR_RETURN(c.insecure, r.Bool(root, "insecure", false));
  const YAML::Node tls = root["tls"];
  if (!tls.IsDefined() || tls.IsNull()) return c;
  if (!tls.IsMap()) return r.Error(tls, "tls", "expected a map");
  const std::filesystem::path base =
      std::filesystem::path(r.source()).parent_path();
  auto path = [&](const char* field, std::string* out) -> absl::Status {
    ES_ASSIGN_OR_RETURN(std::string p, r.String(tls, field, false));
    if (!p.empty() && std::filesystem::path(p).is_relative()) {
      p = (base / p).string();
    }
    *out = p;
    return absl::OkStatus();
  };
  ES_RETURN_IF_ERROR(path("ca", &c.ca_file));
  ES_RETURN_IF_ERROR(path("cert", &c.cert_file));
  ES_RETURN_IF_ERROR(path("key", &c.key_file));
  ES_RETURN_IF_ERROR(path("crl_dir", &c.crl_dir));
  ES_ASSIGN_OR_RETURN(int64_t reload, r.Int(tls, "reload_s", 10));
  c.reload_interval = absl::Seconds(reload);
  return c;
}

bool IsLoopbackAddress(const std::string& address) {
  if (absl::StartsWith(address, "unix:")) return true;
  const std::string host = HostOf(address);
  return host == "localhost" || host == "::1" || absl::StartsWith(host, "127.");
}

absl::StatusOr<std::shared_ptr<const TransportSecurity>>
TransportSecurity::Create(const TlsConfig& config) {
  ES_RETURN_IF_ERROR(config.Validate("tls config"));
  std::shared_ptr<TransportSecurity> s(new TransportSecurity(config));
  if (config.insecure) return s;
  ES_ASSIGN_OR_RETURN(std::string ca, ReadFile(config.ca_file));
  ES_ASSIGN_OR_RETURN(std::string cert, ReadFile(config.cert_file));
  ES_ASSIGN_OR_RETURN(std::string key, ReadFile(config.key_file));
  auto id = CheckCertificate(ca, cert, key);
  if (!id.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(config.cert_file, " (key ", config.key_file, ", CA ",
                     config.ca_file, "): ", id.status().message()));
  }
  s->identity_ = *id;
  s->provider_ = std::make_shared<gx::FileWatcherCertificateProvider>(
      config.key_file, config.cert_file, config.ca_file,
      static_cast<unsigned int>(absl::ToInt64Seconds(config.reload_interval)));
  return s;
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>>
TransportSecurity::ServerCredentials(const std::string& listen) const {
  if (config_.insecure) {
    if (!IsLoopbackAddress(listen))
      return RefuseInsecure("listening on", listen);
    return grpc::InsecureServerCredentials();
  }
  gx::TlsServerCredentialsOptions options(provider_);
  options.watch_root_certs();
  options.watch_identity_key_cert_pairs();
  options.set_cert_request_type(
      GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  options.set_certificate_verifier(
      gx::ExternalCertificateVerifier::Create<SpiffeVerifier>(identity_.cluster,
                                                              std::nullopt));
  if (!config_.crl_dir.empty()) options.set_crl_directory(config_.crl_dir);
  return gx::TlsServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>>
TransportSecurity::ChannelCredentials(const std::string& target,
                                      const Identity& peer) const {
  if (config_.insecure) {
    if (!IsLoopbackAddress(target)) return RefuseInsecure("dialling", target);
    return grpc::InsecureChannelCredentials();
  }
  gx::TlsChannelCredentialsOptions options;
  options.set_certificate_provider(provider_);
  options.watch_root_certs();
  options.watch_identity_key_cert_pairs();
  // The SPIFFE check replaces host-name checks: nodes are named by the
  // plan, whatever address (or relay) they are reached at.
  options.set_check_call_host(false);
  options.set_certificate_verifier(
      gx::ExternalCertificateVerifier::Create<SpiffeVerifier>(identity_.cluster,
                                                              peer));
  if (!config_.crl_dir.empty()) options.set_crl_directory(config_.crl_dir);
  auto creds = gx::TlsCredentials(options);
  if (creds == nullptr) {
    return absl::InternalError("gRPC refused the TLS channel options");
  }
  return creds;
}

void TransportSecurity::AddChannelArgs(const Identity& peer,
                                       grpc::ChannelArguments* args) const {
  if (!config_.insecure) {
    args->SetSslTargetNameOverride(peer.DnsName());
  }
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> TransportSecurity::Dial(
    const std::string& target, const Identity& peer,
    grpc::ChannelArguments args) const {
  ES_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> creds,
                      ChannelCredentials(target, peer));
  AddChannelArgs(peer, &args);
  return grpc::CreateCustomChannel(target, creds, args);
}

absl::StatusOr<Peer> TransportSecurity::PeerOf(
    const grpc::ServerContextBase& ctx) const {
  Peer peer;
  if (config_.insecure) return peer;
  std::shared_ptr<const grpc::AuthContext> auth = ctx.auth_context();
  std::vector<grpc::string_ref> ids =
      auth ? auth->FindPropertyValues(GRPC_PEER_SPIFFE_ID_PROPERTY_NAME)
           : std::vector<grpc::string_ref>{};
  if (ids.size() != 1) {
    return absl::UnauthenticatedError(
        "the caller presented no edgesplit identity");
  }
  auto id = ParseSpiffeId(std::string(ids[0].data(), ids[0].size()));
  if (!id.ok() || id->cluster != identity_.cluster) {
    return absl::UnauthenticatedError(absl::StrCat(
        "the caller's identity ", std::string(ids[0].data(), ids[0].size()),
        " is not of cluster ", identity_.cluster));
  }
  peer.authenticated = true;
  peer.identity = *id;
  return peer;
}

std::shared_ptr<const TransportSecurity> InsecureLoopback() {
  TlsConfig c;
  c.insecure = true;
  return *TransportSecurity::Create(c);
}

absl::Status ExplainHandshakeFailure(absl::Status status) {
  if (status.ok() || status.code() != absl::StatusCode::kUnavailable ||
      !absl::StrContains(status.message(), "andshake")) {
    return status;
  }
  return absl::UnavailableError(absl::StrCat(
      status.message(),
      " (TLS handshake failed: the peer refused our certificate or we "
      "refused its: check that both are of the cluster CA, valid now, not "
      "revoked, and that the address is the node the plan names)"));
}

}  // namespace edgesplit
