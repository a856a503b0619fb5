// What a controller counts for Prometheus (its HTTP port's /metrics,
// ops/ops_http.h): sessions opened and refused, failovers (reroutes),
// planner runs and their solve time as the Controller updates them, and
// at scrape time its nodes' states, open sessions and plan version.
#ifndef EDGESPLIT_CONTROLLER_CONTROLLER_METRICS_H_
#define EDGESPLIT_CONTROLLER_CONTROLLER_METRICS_H_

#include "edgesplit/v1/controller.pb.h"
#include "ops/metrics.h"

namespace edgesplit {

class Controller;

// Pointers into a Registry (which must outlive this). Thread-safe.
struct ControllerMetrics {
  explicit ControllerMetrics(metrics::Registry* registry);

  metrics::Family<metrics::Counter>* sessions_opened;  // {model, kind}
  metrics::Family<metrics::Counter>* open_failures;    // {reason}
  metrics::Counter* reroutes;
  metrics::Family<metrics::Histogram>* solve_seconds;  // {model}
  metrics::Family<metrics::Counter>* replans;          // {model, outcome}
};

// A server's state as the metrics and the status page name it: alive
// (beating), suspected (reported by a device since its last heartbeat),
// down (registered, silent) or unregistered.
const char* NodeStateName(const v1::NodeStatus& node);

// Collectors reading `controller` (which must outlive scrapes).
void AddControllerCollectors(metrics::Registry* registry,
                             Controller* controller);

}  // namespace edgesplit

#endif  // EDGESPLIT_CONTROLLER_CONTROLLER_METRICS_H_
