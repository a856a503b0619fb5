#include "proto/probe.h"

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "proto/grpc_status.h"

namespace edgesplit {
namespace {

absl::StatusOr<double> TimedProbe(v1::StageService::Stub* stub,
                                  const std::string& peer, int up, int down,
                                  absl::Time deadline) {
  grpc::ClientContext ctx;
  ctx.set_deadline(ToChrono(deadline));
  v1::ProbeRequest req;
  req.mutable_payload()->assign(static_cast<size_t>(up), '\0');
  req.set_response_bytes(static_cast<uint32_t>(down));
  v1::ProbeResponse resp;
  const auto t0 = std::chrono::steady_clock::now();
  grpc::Status s = stub->Probe(&ctx, req, &resp);
  const double ms = std::chrono::duration<double, std::milli>(
                        std::chrono::steady_clock::now() - t0)
                        .count();
  if (!s.ok()) return FromGrpcStatus(s, absl::StrCat("probe to ", peer));
  return ms;
}

}  // namespace

absl::StatusOr<v1::LinkProfile> ProbeLink(v1::StageService::Stub* stub,
                                          const std::string& peer,
                                          const ProbeOptions& options) {
  const absl::Time deadline = absl::Now() + options.timeout;
  double rtt = 1e18;
  // The first call also sets up the connection: not counted.
  for (int i = 0; i <= std::max(options.rtt_probes, 1); ++i) {
    auto ms = TimedProbe(stub, peer, 1, 1, deadline);
    if (!ms.ok()) return ms.status();
    if (i > 0) rtt = std::min(rtt, *ms);
  }
  // Payloads grow from 16 KiB until one takes long enough to time well, so
  // a slow link costs a few small transfers and a fast one a few large.
  const int max_bytes = std::max(options.payload_bytes, 1024);
  auto bandwidth = [&](bool upward) -> absl::StatusOr<double> {
    for (int n = std::min(16 << 10, max_bytes);;
         n = std::min(n * 4, max_bytes)) {
      double best = 1e18;
      for (int i = 0; i < 2; ++i) {
        auto ms =
            TimedProbe(stub, peer, upward ? n : 1, upward ? 1 : n, deadline);
        if (!ms.ok()) return ms.status();
        best = std::min(best, *ms);
      }
      // Transfer time is what the payload added to a round trip.
      const double transfer_ms = std::max(best - rtt, 1e-3);
      if (transfer_ms >= 20 || n == max_bytes) return n / (transfer_ms * 1e-3);
    }
  };
  auto up = bandwidth(true);
  if (!up.ok()) return up.status();
  auto down = bandwidth(false);
  if (!down.ok()) return down.status();
  v1::LinkProfile link;
  link.set_peer(peer);
  link.set_rtt_ms(rtt);
  link.set_up_bytes_per_s(*up);
  link.set_down_bytes_per_s(*down);
  return link;
}

}  // namespace edgesplit
