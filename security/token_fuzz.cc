// libFuzzer target for device bearer tokens, which the controller and
// every server accepting tokens parse from any caller's metadata before
// anything else (scripts/fuzz.sh builds and runs it). Two paths:
//  * the input as an authorization header: must be refused (no fuzzer
//    forges Ed25519) without crashing, and ParseDeviceToken must not crash;
//  * the input as a token's payload, signed with a key the target holds,
//    through VerifyDeviceToken: the code behind the signature; whatever it
//    accepts must be a version-1 token of the cluster, unexpired.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "security/token.h"

namespace {

const edgesplit::GrantSigner& Signer() {
  static const auto* s = [] {
    auto pair = edgesplit::NewGrantKeyPair();
    if (!pair.ok()) std::abort();
    return edgesplit::GrantSigner::FromPem(pair->private_pem, "fuzz")
        ->release();
  }();
  return *s;
}

const edgesplit::TokenAuthority& Authority() {
  static const auto* a = [] {
    auto* authority = new edgesplit::TokenAuthority("c");
    if (!authority->SetPublicKey(Signer().public_key()).ok()) std::abort();
    return authority;
  }();
  return *a;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  const absl::Time now = absl::Now();
  (void)edgesplit::ParseDeviceToken(bytes);
  if (Authority().Authenticate(absl::StrCat("Bearer ", bytes), now).ok()) {
    std::abort();  // A forged token passed.
  }
  auto verifier =
      edgesplit::GrantVerifier::FromPublicKey(Signer().public_key());
  auto sig = Signer().SignBytes("edgesplit device token v1\n", bytes);
  if (!verifier.ok() || !sig.ok()) std::abort();
  const std::string token = absl::StrCat(edgesplit::kDeviceTokenPrefix,
                                         absl::WebSafeBase64Escape(bytes), ".",
                                         absl::WebSafeBase64Escape(*sig));
  auto t = edgesplit::VerifyDeviceToken(**verifier, token, "c", now);
  if (t.ok() && (t->version() != 1 || t->cluster() != "c" ||
                 now >= absl::FromUnixSeconds(t->expires_unix()))) {
    std::abort();
  }
  return 0;
}
