// Link measurement with the StageService.Probe RPC: round-trip time from
// small probes, bandwidth from payloads sent each way. gRPC's own cost is
// inside the numbers on purpose: it is what a hop costs.
#ifndef EDGESPLIT_PROTO_PROBE_H_
#define EDGESPLIT_PROTO_PROBE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "edgesplit/v1/controller.pb.h"
#include "edgesplit/v1/stage.grpc.pb.h"

namespace edgesplit {

struct ProbeOptions {
  int rtt_probes = 5;                          // Best of.
  int payload_bytes = 256 << 10;               // Per bandwidth probe.
  absl::Duration timeout = absl::Seconds(10);  // Whole measurement.
};

// Measures the link to `peer` through `stub` (thread-safe stub).
absl::StatusOr<v1::LinkProfile> ProbeLink(v1::StageService::Stub* stub,
                                          const std::string& peer,
                                          const ProbeOptions& options = {});

// The largest response a Probe may ask for.
inline constexpr uint32_t kMaxProbeResponseBytes = 16u << 20;

}  // namespace edgesplit

#endif  // EDGESPLIT_PROTO_PROBE_H_
