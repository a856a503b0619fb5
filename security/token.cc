#include "security/token.h"

#include <openssl/rand.h>

#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "base/status_macros.h"

namespace edgesplit {
namespace {

// Signatures are over this prefix + the token's bytes (security/grant.h).
constexpr char kDomain[] = "edgesplit device token v1\n";

absl::Status Malformed(const std::string& why) {
  return absl::UnauthenticatedError(
      absl::StrCat("device token is malformed: ", why));
}

struct Parts {
  std::string payload;
  std::string signature;
};

absl::StatusOr<Parts> Split(absl::string_view text) {
  if (text.size() > kMaxDeviceTokenBytes) {
    return Malformed(
        absl::StrCat(text.size(), " bytes, more than ", kMaxDeviceTokenBytes));
  }
  if (!absl::ConsumePrefix(&text, kDeviceTokenPrefix)) {
    return Malformed(
        absl::StrCat("it does not start with \"", kDeviceTokenPrefix, "\""));
  }
  std::vector<absl::string_view> parts = absl::StrSplit(text, '.');
  Parts out;
  if (parts.size() != 2 ||
      !absl::WebSafeBase64Unescape(parts[0], &out.payload) ||
      !absl::WebSafeBase64Unescape(parts[1], &out.signature)) {
    return Malformed("want esdt1.<base64url>.<base64url>");
  }
  return out;
}

absl::StatusOr<v1::DeviceToken> Decode(const std::string& payload) {
  v1::DeviceToken t;
  if (!t.ParseFromString(payload)) return Malformed("not a DeviceToken");
  if (t.version() != 1) {
    return Malformed(absl::StrCat("version ", t.version(), " is not 1"));
  }
  if (!CheckIdentityName("cluster", t.cluster()).ok() ||
      !CheckIdentityName("device", t.device()).ok()) {
    return Malformed("bad cluster or device name");
  }
  return t;
}

}  // namespace

absl::StatusOr<std::string> IssueDeviceToken(const GrantSigner& signer,
                                             const std::string& cluster,
                                             const std::string& device,
                                             absl::Duration ttl,
                                             absl::Time now) {
  ES_RETURN_IF_ERROR(CheckIdentityName("cluster", cluster));
  ES_RETURN_IF_ERROR(CheckIdentityName("device", device));
  if (ttl <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("a token's lifetime must be positive");
  }
  unsigned char id[12];
  if (RAND_bytes(id, sizeof(id)) != 1) {
    return absl::InternalError("no randomness for the token id");
  }
  v1::DeviceToken t;
  t.set_version(1);
  t.set_cluster(cluster);
  t.set_device(device);
  t.set_issued_unix(absl::ToUnixSeconds(now));
  t.set_expires_unix(absl::ToUnixSeconds(now + ttl));
  t.set_token_id(absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(id), sizeof(id))));
  const std::string payload = t.SerializeAsString();
  ES_ASSIGN_OR_RETURN(std::string sig, signer.SignBytes(kDomain, payload));
  return absl::StrCat(kDeviceTokenPrefix, absl::WebSafeBase64Escape(payload),
                      ".", absl::WebSafeBase64Escape(sig));
}

absl::StatusOr<v1::DeviceToken> ParseDeviceToken(absl::string_view text) {
  ES_ASSIGN_OR_RETURN(Parts parts, Split(text));
  return Decode(parts.payload);
}

absl::StatusOr<v1::DeviceToken> VerifyDeviceToken(const GrantVerifier& verifier,
                                                  absl::string_view text,
                                                  const std::string& cluster,
                                                  absl::Time now) {
  ES_ASSIGN_OR_RETURN(Parts parts, Split(text));
  if (!verifier.VerifyBytes(kDomain, parts.payload, parts.signature)) {
    return absl::UnauthenticatedError(
        "device token signature does not verify with the controller's key "
        "(forged, altered, or issued by another cluster's controller)");
  }
  ES_ASSIGN_OR_RETURN(v1::DeviceToken t, Decode(parts.payload));
  if (t.cluster() != cluster) {
    return absl::UnauthenticatedError(
        absl::StrCat("device token of device \"", t.device(),
                     "\" is for cluster ", t.cluster(), ", not ", cluster));
  }
  if (now >= absl::FromUnixSeconds(t.expires_unix())) {
    return absl::UnauthenticatedError(absl::StrCat(
        "device token ", t.token_id(), " of device \"", t.device(),
        "\" expired at ",
        absl::FormatTime(absl::FromUnixSeconds(t.expires_unix()))));
  }
  return t;
}

absl::Status TokenAuthority::SetPublicKey(const std::string& raw) {
  std::shared_ptr<const GrantVerifier> verifier;
  if (!raw.empty()) {
    ES_ASSIGN_OR_RETURN(verifier, GrantVerifier::FromPublicKey(raw));
  }
  absl::MutexLock lock(&mu_);
  verifier_ = std::move(verifier);
  return absl::OkStatus();
}

absl::StatusOr<Peer> TokenAuthority::Authenticate(
    absl::string_view authorization, absl::Time now) const {
  if (authorization.empty()) {
    return absl::UnauthenticatedError(
        "the caller presented neither a client certificate nor a device "
        "token");
  }
  if (!absl::ConsumePrefix(&authorization, "Bearer ")) {
    return absl::UnauthenticatedError(
        "the authorization header is not \"Bearer <device token>\"");
  }
  std::shared_ptr<const GrantVerifier> verifier;
  {
    absl::MutexLock lock(&mu_);
    verifier = verifier_;
  }
  if (verifier == nullptr) {
    return absl::UnauthenticatedError(
        "this process has no controller key yet to check device tokens");
  }
  ES_ASSIGN_OR_RETURN(
      v1::DeviceToken t,
      VerifyDeviceToken(*verifier, authorization, cluster_, now));
  Peer peer;
  peer.authenticated = true;
  peer.identity = DeviceIdentity(t.cluster(), t.device());
  peer.token_id = t.token_id();
  return peer;
}

}  // namespace edgesplit
