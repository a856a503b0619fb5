// libFuzzer target for route grants, the one structure every edge server
// parses from any caller before anything else (scripts/fuzz.sh builds and
// runs it). Two paths:
//  * the input as a SignedGrant through GrantVerifier::Verify: must be
//    refused (no fuzzer forges Ed25519) without crashing;
//  * the input as grant bytes through ParseGrant and CheckGrantForHop,
//    the code behind the signature, with a fixed OpenSession: must not
//    crash, and whatever it accepts must really match the open.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/time/clock.h"
#include "security/grant.h"

namespace {

const edgesplit::GrantVerifier& Verifier() {
  static const auto* v = [] {
    auto pair = edgesplit::NewGrantKeyPair();
    if (!pair.ok()) std::abort();
    return edgesplit::GrantVerifier::FromPublicKey(pair->public_raw)->release();
  }();
  return *v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  edgesplit::v1::SignedGrant signed_grant;
  if (signed_grant.ParseFromString(bytes) &&
      Verifier().Verify(signed_grant).ok()) {
    std::abort();  // A forged signature verified.
  }
  auto grant = edgesplit::ParseGrant(bytes);
  if (!grant.ok()) return 0;
  edgesplit::v1::OpenSession open;
  open.set_session_id("s");
  open.set_model_id("m");
  edgesplit::v1::Hop* hop = open.add_route();
  hop->set_node("a");
  hop->set_address("127.0.0.1:1");
  const edgesplit::Peer device{true, edgesplit::DeviceIdentity("c", "d")};
  if (edgesplit::CheckGrantForHop(*grant, open, "a", device, absl::Now())
          .ok()) {
    // Accepted: then it must be exactly this session, at its last hop.
    const auto& last = grant->route(grant->route_size() - 1);
    if (grant->model_id() != "m" || last.node() != "a" ||
        last.address() != "127.0.0.1:1") {
      std::abort();
    }
  }
  return 0;
}
