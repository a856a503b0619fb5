#include "security/tls.h"

#include <atomic>
#include <filesystem>
#include <optional>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "base/file_util.h"
#include "base/status_macros.h"
#include "grpcpp/security/tls_certificate_verifier.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "ops/metrics.h"
#include "security/certs.h"

namespace edgesplit {
namespace {

namespace gx = grpc::experimental;

// Accepts a peer certificate (already chained to the CA by gRPC) only if
// its one spiffe:// ID is of `cluster` and, when `want` is set, is exactly
// `want`.
class SpiffeVerifier : public gx::ExternalCertificateVerifier {
 public:
  // `allow_none`: a server accepting device tokens lets callers without
  // a certificate through the handshake; PeerOf then wants a token.
  // `refused` (shared with the TransportSecurity) counts the refusals.
  SpiffeVerifier(std::string cluster, std::optional<Identity> want,
                 std::shared_ptr<std::atomic<int64_t>> refused,
                 bool allow_none = false)
      : cluster_(std::move(cluster)),
        want_(std::move(want)),
        refused_(std::move(refused)),
        allow_none_(allow_none) {}

  bool Verify(gx::TlsCustomVerificationCheckRequest* request,
              std::function<void(grpc::Status)> /*callback*/,
              grpc::Status* sync_status) override {
    if (allow_none_ && request->peer_cert().empty()) {
      *sync_status = grpc::Status::OK;
      return true;
    }
    std::vector<std::string> ids;
    for (const grpc::string_ref& u : request->uri_names()) {
      if (absl::StartsWith(absl::string_view(u.data(), u.size()),
                           "spiffe://")) {
        ids.emplace_back(u.data(), u.size());
      }
    }
    *sync_status = Check(ids);
    if (!sync_status->ok()) refused_->fetch_add(1, std::memory_order_relaxed);
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
  const std::shared_ptr<std::atomic<int64_t>> refused_;
  const bool allow_none_;
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
    if (!ca_file.empty() || !cert_file.empty() || !key_file.empty() ||
        !token_file.empty() || device_tokens) {
      return bad("insecure", "true together with tls settings; choose one");
    }
    return absl::OkStatus();
  }
  if (!token_file.empty()) {
    if (!cert_file.empty() || !key_file.empty()) {
      return bad("tls.token", "set together with tls.cert/tls.key; choose one");
    }
    if (device_tokens) {
      return bad("tls.device_tokens", "a device (tls.token) serves no calls");
    }
    if (ca_file.empty()) return bad("tls.ca", "missing");
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
  if (keepalive < absl::Milliseconds(100)) {
    return bad("keepalive_s", "must be positive");
  }
  if (reload_interval < absl::Seconds(1)) {
    return bad("tls.reload_s", "must be at least 1");
  }
  return absl::OkStatus();
}

absl::StatusOr<TlsConfig> ParseTlsConfig(const YamlReader& r,
                                         const YAML::Node& root) {
  TlsConfig c;
  ES_ASSIGN_OR_RETURN(c.insecure, r.Bool(root, "insecure", false));
  ES_ASSIGN_OR_RETURN(int64_t keepalive,
                      r.IntIn(root, "keepalive_s", 10, 1, 3600));
  c.keepalive = absl::Seconds(keepalive);
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
  ES_RETURN_IF_ERROR(path("token", &c.token_file));
  ES_ASSIGN_OR_RETURN(c.device_tokens, r.Bool(tls, "device_tokens", false));
  ES_ASSIGN_OR_RETURN(int64_t reload, r.IntIn(tls, "reload_s", 10, 1, 86400));
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
  if (!config.token_file.empty()) {
    ES_RETURN_IF_ERROR(s->LoadToken(ca));
    return s;
  }
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
  if (config.device_tokens) {
    s->tokens_ = std::make_shared<TokenAuthority>(s->identity_.cluster);
  }
  return s;
}

absl::Status TransportSecurity::LoadToken(const std::string& ca) {
  ES_ASSIGN_OR_RETURN(std::string text, ReadFile(config_.token_file));
  while (!text.empty() &&
         (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) {
    text.pop_back();
  }
  auto token = ParseDeviceToken(text);
  if (!token.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(config_.token_file, ": ", token.status().message(),
                     " (`edgesplit certs token` issues tokens)"));
  }
  auto cluster = CaCluster(ca);
  if (!cluster.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(config_.ca_file, ": ", cluster.status().message()));
  }
  if (*cluster != token->cluster()) {
    return absl::InvalidArgumentError(absl::StrCat(
        config_.token_file, ": a token of cluster ", token->cluster(),
        ", but the CA ", config_.ca_file, " is of cluster ", *cluster));
  }
  identity_ = DeviceIdentity(token->cluster(), token->device());
  token_ = std::move(text);
  provider_ = std::make_shared<gx::FileWatcherCertificateProvider>(
      config_.ca_file,
      static_cast<unsigned int>(absl::ToInt64Seconds(config_.reload_interval)));
  return absl::OkStatus();
}

void TransportSecurity::ConfigureServer(grpc::ServerBuilder* builder) const {
  const int ms = static_cast<int>(absl::ToInt64Milliseconds(config_.keepalive));
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, ms);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ms);
  builder->AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // Clients ping at `keepalive` too; allow some jitter below it.
  builder->AddChannelArgument(
      GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, ms / 2);
  builder->AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 2);
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>>
TransportSecurity::ServerCredentials(const std::string& listen) const {
  if (config_.insecure) {
    if (!IsLoopbackAddress(listen))
      return RefuseInsecure("listening on", listen);
    return grpc::InsecureServerCredentials();
  }
  if (!token_.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("a device token (", config_.token_file,
                     ") cannot serve calls: servers need a certificate"));
  }
  gx::TlsServerCredentialsOptions options(provider_);
  options.watch_root_certs();
  options.watch_identity_key_cert_pairs();
  options.set_cert_request_type(
      tokens_ ? GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY
              : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  options.set_certificate_verifier(
      gx::ExternalCertificateVerifier::Create<SpiffeVerifier>(
          identity_.cluster, std::nullopt, refused_, tokens_ != nullptr));
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
  if (token_.empty()) options.watch_identity_key_cert_pairs();
  // The SPIFFE check replaces host-name checks: nodes are named by the
  // plan, whatever address (or relay) they are reached at.
  options.set_check_call_host(false);
  options.set_certificate_verifier(
      gx::ExternalCertificateVerifier::Create<SpiffeVerifier>(identity_.cluster,
                                                              peer, refused_));
  if (!config_.crl_dir.empty()) options.set_crl_directory(config_.crl_dir);
  auto creds = gx::TlsCredentials(options);
  if (creds == nullptr) {
    return absl::InternalError("gRPC refused the TLS channel options");
  }
  if (!token_.empty()) {
    // gRPC sends call credentials only over channels with privacy.
    creds = grpc::CompositeChannelCredentials(
        creds, grpc::AccessTokenCredentials(token_));
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
  const int ms = static_cast<int>(absl::ToInt64Milliseconds(config_.keepalive));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, ms);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, ms);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  // A restarted peer is reachable again within a second: gRPC's default
  // backoff grows to two minutes, during which every call on the channel
  // fails at once with the last connect error, so a device rerouting onto
  // a server that just came back burned its reroutes in milliseconds.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
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
  if (ids.empty() && tokens_ != nullptr) {
    absl::string_view authorization;
    auto it = ctx.client_metadata().find("authorization");
    if (it != ctx.client_metadata().end()) {
      authorization = absl::string_view(it->second.data(), it->second.size());
    }
    return tokens_->Authenticate(authorization, absl::Now());
  }
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

void AddTlsMetrics(metrics::Registry* registry,
                   const TransportSecurity* security) {
  registry->AddCallback(
      metrics::Type::kCounter, "edgesplit_tls_handshakes_refused_total",
      "TLS handshakes (served or dialled) refused because the peer's "
      "certificate named no SPIFFE ID, several, or the wrong one. Refusals "
      "inside gRPC (a certificate not of the cluster's CA, expired or "
      "revoked) are not counted here.",
      {}, [security](const metrics::EmitFn& emit) {
        emit({}, static_cast<double>(security->refused_handshakes()));
      });
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
