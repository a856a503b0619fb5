#include "security/grant.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "base/file_util.h"
#include "base/status_macros.h"

namespace edgesplit {
namespace {

// Signatures are over this prefix + the grant's bytes: a grant signature
// can never be mistaken for a signature over anything else.
constexpr char kDomain[] = "edgesplit route grant v1\n";
constexpr size_t kRawKeyBytes = 32;
constexpr size_t kSignatureBytes = 64;

struct PkeyDeleter {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
};
struct MdDeleter {
  void operator()(EVP_MD_CTX* p) const { EVP_MD_CTX_free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyDeleter>;
using MdPtr = std::unique_ptr<EVP_MD_CTX, MdDeleter>;

absl::StatusOr<std::string> RawPublic(EVP_PKEY* key) {
  std::string raw(kRawKeyBytes, '\0');
  size_t n = raw.size();
  if (EVP_PKEY_get_raw_public_key(
          key, reinterpret_cast<unsigned char*>(raw.data()), &n) != 1 ||
      n != kRawKeyBytes) {
    ERR_clear_error();
    return absl::InternalError("cannot read the Ed25519 public key");
  }
  return raw;
}

bool SameHop(const v1::Hop& a, const v1::Hop& b) {
  return a.node() == b.node() && a.address() == b.address() &&
         a.peer_address() == b.peer_address() &&
         a.first_block() == b.first_block() && a.last_block() == b.last_block();
}

absl::Status Denied(const v1::RouteGrant& g, const std::string& why) {
  return absl::PermissionDeniedError(
      absl::StrCat("route grant of session ", g.session_id(), ": ", why));
}

}  // namespace

struct GrantSigner::Key {
  PkeyPtr pkey;
};
struct GrantVerifier::Key {
  PkeyPtr pkey;
};

absl::StatusOr<GrantKeyPair> NewGrantKeyPair() {
  PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  if (!key) return absl::InternalError("Ed25519 key generation failed");
  BIO* bio = BIO_new(BIO_s_mem());
  const bool ok = PEM_write_bio_PrivateKey(bio, key.get(), nullptr, nullptr, 0,
                                           nullptr, nullptr) == 1;
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  GrantKeyPair pair;
  pair.private_pem.assign(data, static_cast<size_t>(n));
  BIO_free(bio);
  if (!ok) return absl::InternalError("cannot write the Ed25519 key");
  ES_ASSIGN_OR_RETURN(pair.public_raw, RawPublic(key.get()));
  return pair;
}

GrantSigner::GrantSigner(std::unique_ptr<Key> key, std::string public_raw)
    : key_(std::move(key)), public_raw_(std::move(public_raw)) {}
GrantSigner::~GrantSigner() = default;

absl::StatusOr<std::unique_ptr<GrantSigner>> GrantSigner::FromPem(
    const std::string& pem, const std::string& source) {
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  PkeyPtr key(PEM_read_bio_PrivateKey(bio, nullptr, nullptr, nullptr));
  BIO_free(bio);
  ERR_clear_error();
  if (!key || EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_ED25519) {
    return absl::InvalidArgumentError(
        absl::StrCat(source,
                     ": not an Ed25519 private key in PEM (`edgesplit certs "
                     "init` writes grant.key)"));
  }
  ES_ASSIGN_OR_RETURN(std::string raw, RawPublic(key.get()));
  auto k = std::make_unique<Key>();
  k->pkey = std::move(key);
  return std::unique_ptr<GrantSigner>(new GrantSigner(std::move(k), raw));
}

absl::StatusOr<std::unique_ptr<GrantSigner>> GrantSigner::FromPemFile(
    const std::string& path) {
  ES_ASSIGN_OR_RETURN(std::string pem, ReadFile(path));
  return FromPem(pem, path);
}

absl::StatusOr<std::string> GrantSigner::SignBytes(
    absl::string_view domain, const std::string& bytes) const {
  const std::string msg = absl::StrCat(domain, bytes);
  std::string sig(kSignatureBytes, '\0');
  size_t n = sig.size();
  MdPtr md(EVP_MD_CTX_new());
  if (!md ||
      EVP_DigestSignInit(md.get(), nullptr, nullptr, nullptr,
                         key_->pkey.get()) != 1 ||
      EVP_DigestSign(md.get(), reinterpret_cast<unsigned char*>(sig.data()), &n,
                     reinterpret_cast<const unsigned char*>(msg.data()),
                     msg.size()) != 1 ||
      n != kSignatureBytes) {
    ERR_clear_error();
    return absl::InternalError("Ed25519 signing failed");
  }
  return sig;
}

absl::StatusOr<v1::SignedGrant> GrantSigner::Sign(
    const v1::RouteGrant& grant) const {
  v1::SignedGrant out;
  if (!grant.SerializeToString(out.mutable_grant())) {
    return absl::InternalError("cannot serialise the grant");
  }
  ES_ASSIGN_OR_RETURN(*out.mutable_signature(),
                      SignBytes(kDomain, out.grant()));
  return out;
}

GrantVerifier::GrantVerifier(std::unique_ptr<Key> key) : key_(std::move(key)) {}
GrantVerifier::~GrantVerifier() = default;

absl::StatusOr<std::unique_ptr<GrantVerifier>> GrantVerifier::FromPublicKey(
    const std::string& raw) {
  if (raw.size() != kRawKeyBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("grant public key has ", raw.size(), " bytes, not 32"));
  }
  PkeyPtr key(EVP_PKEY_new_raw_public_key(
      EVP_PKEY_ED25519, nullptr,
      reinterpret_cast<const unsigned char*>(raw.data()), raw.size()));
  if (!key) {
    ERR_clear_error();
    return absl::InvalidArgumentError("not an Ed25519 public key");
  }
  auto k = std::make_unique<Key>();
  k->pkey = std::move(key);
  return std::unique_ptr<GrantVerifier>(new GrantVerifier(std::move(k)));
}

bool GrantVerifier::VerifyBytes(absl::string_view domain,
                                const std::string& bytes,
                                const std::string& signature) const {
  if (signature.size() != kSignatureBytes) return false;
  const std::string msg = absl::StrCat(domain, bytes);
  MdPtr md(EVP_MD_CTX_new());
  const bool ok =
      md &&
      EVP_DigestVerifyInit(md.get(), nullptr, nullptr, nullptr,
                           key_->pkey.get()) == 1 &&
      EVP_DigestVerify(
          md.get(), reinterpret_cast<const unsigned char*>(signature.data()),
          signature.size(), reinterpret_cast<const unsigned char*>(msg.data()),
          msg.size()) == 1;
  ERR_clear_error();
  return ok;
}

absl::StatusOr<v1::RouteGrant> GrantVerifier::Verify(
    const v1::SignedGrant& grant) const {
  if (grant.grant().empty()) {
    return absl::PermissionDeniedError("no route grant");
  }
  if (grant.grant().size() > kMaxGrantBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("route grant of ", grant.grant().size(), " bytes exceeds ",
                     kMaxGrantBytes));
  }
  if (grant.signature().size() != kSignatureBytes) {
    return absl::PermissionDeniedError(
        absl::StrCat("route grant signature has ", grant.signature().size(),
                     " bytes, not 64"));
  }
  if (!VerifyBytes(kDomain, grant.grant(), grant.signature())) {
    return absl::PermissionDeniedError(
        "route grant signature does not verify with the controller's key "
        "(forged, altered, or signed by another controller)");
  }
  return ParseGrant(grant.grant());
}

absl::StatusOr<v1::RouteGrant> ParseGrant(const std::string& bytes) {
  v1::RouteGrant g;
  if (bytes.size() > kMaxGrantBytes || !g.ParseFromString(bytes)) {
    return absl::InvalidArgumentError("route grant is not a RouteGrant");
  }
  if (g.version() != 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("route grant version ", g.version(), " is not 1"));
  }
  if (g.session_id().empty() || g.route_size() == 0) {
    return absl::InvalidArgumentError(
        "route grant without a session id or route");
  }
  return g;
}

absl::Status CheckGrantForHop(const v1::RouteGrant& g,
                              const v1::OpenSession& open,
                              const std::string& node, const Peer& caller,
                              absl::Time now, int max_hops) {
  if (now > absl::FromUnixMillis(g.expires_unix_ms())) {
    return Denied(
        g, absl::StrCat("expired at ", absl::FormatTime(absl::FromUnixMillis(
                                           g.expires_unix_ms()))));
  }
  if (g.route_size() > max_hops) {
    return Denied(g, absl::StrCat("a route of ", g.route_size(),
                                  " hops exceeds the cap of ", max_hops));
  }
  // A session's streams (one per generation) are "<session>/<n>".
  if (open.session_id() != g.session_id() &&
      !absl::StartsWith(open.session_id(), g.session_id() + "/")) {
    return Denied(g, absl::StrCat("opening session ", open.session_id()));
  }
  const char* differs =
      g.model_id() != open.model_id()                ? "model"
      : g.adapter() != open.adapter()                ? "adapter"
      : g.codec() != open.codec()                    ? "codec"
      : g.return_hidden() != open.return_hidden()    ? "U-shape (return_hidden)"
      : g.training_job() != open.training().job_id() ? "training job"
                                                     : nullptr;
  if (differs != nullptr) {
    return Denied(
        g, absl::StrCat("the session's ", differs, " is not what was granted"));
  }
  const int n = open.route_size();
  if (n == 0 || n > g.route_size()) {
    return Denied(g, absl::StrCat("a route of ", n,
                                  " hops is not a suffix of the granted ",
                                  g.route_size()));
  }
  const int at = g.route_size() - n;  // This hop's index in the grant.
  for (int k = 0; k < n; ++k) {
    if (!SameHop(g.route(at + k), open.route(k))) {
      return Denied(
          g, absl::StrCat("route[", k, "] (", open.route(k).node(), " at ",
                          open.route(k).address(), ") is not the granted hop ",
                          g.route(at + k).node(), " at ",
                          g.route(at + k).address()));
    }
  }
  if (g.route(at).node() != node) {
    return Denied(g, absl::StrCat("this is ", node, ", not granted hop ",
                                  g.route(at).node()));
  }
  if (!caller.authenticated) return absl::OkStatus();
  const Identity want =
      at == 0 ? DeviceIdentity(caller.identity.cluster, g.device())
              : NodeIdentity(caller.identity.cluster, g.route(at - 1).node());
  if (!(caller.identity == want)) {
    return Denied(g, absl::StrCat("opened by ", caller.identity.ToString(),
                                  ", but the grant lets only ", want.ToString(),
                                  " open it here"));
  }
  return absl::OkStatus();
}

}  // namespace edgesplit
