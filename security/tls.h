// Transport security of every edgesplit channel: mutual TLS with gRPC's TLS
// credentials, or plaintext only when explicitly configured and only on
// loopback addresses.
//
// Both ends present a certificate of the cluster CA naming them
// (security/identity.h). A client checks that the server it dialled is the
// one it meant (the plan's node, the controller), not merely someone with a
// cluster certificate; a server reads the caller's identity from the
// handshake (PeerOf) and its services decide what that identity may do.
// Certificates, keys and the CA are re-read from disk every
// `reload_interval` (gRPC's file watcher): replacing the files rotates them
// without a restart; handshakes after the reload use the new files, open
// connections keep the old ones until they close. TLS 1.2 is the minimum
// version (gRPC's TLS credentials' default; 1.3 is preferred), and with
// `crl_dir` every handshake checks the hashed CRLs in it.
#ifndef EDGESPLIT_SECURITY_TLS_H_
#define EDGESPLIT_SECURITY_TLS_H_

#include <atomic>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "base/yaml_util.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "security/identity.h"
#include "security/token.h"

namespace edgesplit {
namespace metrics {
class Registry;
}  // namespace metrics

struct TlsConfig {
  std::string ca_file;    // The cluster CA (PEM).
  std::string cert_file;  // This process's certificate (PEM), naming it.
  std::string key_file;   // Its private key (PEM).
  std::string crl_dir;    // Optional: hashed CRLs (`<issuer-hash>.r0`).
  absl::Duration reload_interval = absl::Seconds(10);
  // A device without a certificate: its bearer token (security/token.h)
  // instead of cert_file/key_file. Clients only; read once at Create.
  std::string token_file;
  // Servers: also accept callers that present no client certificate but
  // a valid device token (they can only act as that device).
  bool device_tokens = false;
  // Liveness of every connection, both ways: a ping after this long
  // without traffic, and a peer that does not answer within as long again
  // is gone (its calls fail UNAVAILABLE). This is what notices a silent
  // host (stopped, partitioned) that still holds its TCP connections open.
  // Servers accept client pings this often and no more (abusers get
  // GOAWAY). Not TLS, but every channel's transport setting lives here.
  absl::Duration keepalive = absl::Seconds(10);
  // Plaintext, no identities: every caller is trusted. Refused unless
  // every address this process listens on or dials is a loopback one.
  bool insecure = false;

  // Errors name `source` and the field (tls.ca, tls.cert, ...). The files
  // themselves are checked by TransportSecurity::Create.
  absl::Status Validate(const std::string& source) const;
};

// Reads a daemon config's
//   tls: {ca: ca.pem, cert: node-a.pem, key: node-a.key,
//         crl_dir: crl, reload_s: 10, device_tokens: false}
//   insecure: false
//   keepalive_s: 10
// Relative paths are relative to the config file's directory.
absl::StatusOr<TlsConfig> ParseTlsConfig(const YamlReader& reader,
                                         const YAML::Node& root);

// True for 127.0.0.0/8, ::1, localhost and unix: sockets.
bool IsLoopbackAddress(const std::string& address);

// Immutable and thread-safe once created; share it (shared_ptr).
class TransportSecurity {
 public:
  // Checks the files now, so a daemon with a wrong key, an expired
  // certificate or one from another CA fails at start with the file named,
  // not later at its first handshake.
  static absl::StatusOr<std::shared_ptr<const TransportSecurity>> Create(
      const TlsConfig& config);

  bool insecure() const { return config_.insecure; }
  // This process's identity (empty in insecure mode).
  const Identity& identity() const { return identity_; }
  const std::string& cluster() const { return identity_.cluster; }

  // What every server's builder needs besides credentials: keepalive
  // pings of clients, and the policy for theirs.
  void ConfigureServer(grpc::ServerBuilder* builder) const;
  // For a server listening on `listen`: requires and verifies client
  // certificates of this cluster (with device_tokens: verifies those
  // presented; PeerOf then wants a token from callers without one).
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
      const std::string& listen) const;
  // For dialling `target`, which must present `peer`'s certificate. A
  // device with a token sends it on every call.
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(
      const std::string& target, const Identity& peer) const;
  // Channel arguments for dialling `peer`: the TLS server name it answers
  // to (its certificate's DNS name). Call before creating the channel.
  void AddChannelArgs(const Identity& peer, grpc::ChannelArguments* args) const;
  // Credentials and arguments together: a channel to `target` that must be
  // `peer`, with `args` (message limits, ...) added.
  absl::StatusOr<std::shared_ptr<grpc::Channel>> Dial(
      const std::string& target, const Identity& peer,
      grpc::ChannelArguments args = {}) const;
  // The caller of a call this process serves: its certificate's identity
  // or, with device_tokens, the device its token names. Unauthenticated
  // error when a secure call carries neither (for this cluster).
  absl::StatusOr<Peer> PeerOf(const grpc::ServerContextBase& ctx) const;
  // With device_tokens: where the controller's key goes once known (the
  // controller's own; a server's from its plans). Null otherwise.
  TokenAuthority* tokens() const { return tokens_.get(); }
  // Handshakes (served or dialled) refused because the peer's certificate
  // named no SPIFFE ID, several, or the wrong one. Certificates that do
  // not chain to the CA, have expired or are revoked are refused inside
  // gRPC before this check and are not counted.
  int64_t refused_handshakes() const { return refused_->load(); }

 private:
  explicit TransportSecurity(TlsConfig config) : config_(std::move(config)) {}
  // Create's second half for a device with a token and CA `ca` (PEM).
  absl::Status LoadToken(const std::string& ca);

  const TlsConfig config_;
  Identity identity_;
  std::shared_ptr<grpc::experimental::CertificateProviderInterface> provider_;
  std::string token_;  // A device's bearer token, if it has no certificate.
  std::shared_ptr<TokenAuthority> tokens_;
  // Shared with the verifiers gRPC keeps (they may outlive this object).
  std::shared_ptr<std::atomic<int64_t>> refused_ =
      std::make_shared<std::atomic<int64_t>>(0);
};

// Registers edgesplit_tls_handshakes_refused_total, read from `security`
// (which must outlive the registry's scrapes) at each scrape.
void AddTlsMetrics(metrics::Registry* registry,
                   const TransportSecurity* security);

// Insecure settings for tests that run plaintext on loopback.
std::shared_ptr<const TransportSecurity> InsecureLoopback();

// A hint appended to a failed call's status when it looks like a TLS
// handshake failure (gRPC reports those as UNAVAILABLE with OpenSSL's
// terse reason). FromGrpcStatus applies it to every call's status.
absl::Status ExplainHandshakeFailure(absl::Status status);

}  // namespace edgesplit

#endif  // EDGESPLIT_SECURITY_TLS_H_
