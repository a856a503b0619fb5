// What an edge server counts for Prometheus (served on its HTTP port's
// /metrics, ops/ops_http.h). The hot paths update these metrics directly
// (sessions, batcher, wire bytes, training); what the server keeps anyway
// (KV bytes, adapter caches, admission budgets, readiness) is read at
// scrape time by collectors EdgeServer registers (AddServerCollectors).
#ifndef EDGESPLIT_EDGE_SERVER_SERVER_METRICS_H_
#define EDGESPLIT_EDGE_SERVER_SERVER_METRICS_H_

#include <array>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "edge_server/batcher.h"
#include "edgesplit/v1/stage.pb.h"
#include "ops/metrics.h"

namespace edgesplit {

// Pointers into a Registry (which must outlive this). Thread-safe.
struct ServerMetrics {
  explicit ServerMetrics(metrics::Registry* registry);

  // A session of `kind` ("inference", "training") opened; ended with
  // `status` (its code names the reason; OK is a normal finish).
  void SessionOpened(absl::string_view kind) const;
  void SessionEnded(absl::string_view kind, int status_code) const;
  // Bytes of a message in `direction` ("in", "out") in `codec`.
  void Bytes(absl::string_view direction, v1::Codec codec, size_t bytes) const;

  BatchMetrics batch;                    // Given to every stage's batcher.
  metrics::Histogram* next_hop_seconds;  // forward → the next hop's answer
  metrics::Histogram* step_seconds;      // request received → answered
  metrics::Family<metrics::Counter>* sessions_opened;  // {kind}
  metrics::Family<metrics::Counter>* sessions_ended;   // {kind, reason}
  metrics::Family<metrics::Gauge>* sessions_open;      // {kind}
  metrics::Family<metrics::Counter>* message_bytes;    // {direction, codec}

 private:
  // message_bytes' children by [out][codec], resolved once: Bytes runs
  // several times per step and a family lookup costs a lock and a map.
  std::vector<std::array<metrics::Counter*, 2>> bytes_by_codec_;
};

class EdgeServer;

// The collectors read at scrape time from `server` (which must outlive the
// registry's scrapes): KV cache bytes, adapter caches, admission budgets,
// training jobs, readiness, plans applied, refused TLS handshakes.
void AddServerCollectors(metrics::Registry* registry, EdgeServer* server);

}  // namespace edgesplit

#endif  // EDGESPLIT_EDGE_SERVER_SERVER_METRICS_H_
