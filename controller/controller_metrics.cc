#include "controller/controller_metrics.h"

#include <map>
#include <string>

#include "controller/controller.h"

namespace edgesplit {

ControllerMetrics::ControllerMetrics(metrics::Registry* r) {
  sessions_opened = r->AddCounter(
      "edgesplit_controller_sessions_opened_total",
      "Sessions routed (inference or training), per model.", {"model", "kind"});
  open_failures = r->AddCounter(
      "edgesplit_controller_session_open_failures_total",
      "OpenSession calls of authenticated callers refused, by status code "
      "(not_found: no such model; unavailable: no live route; "
      "permission_denied: the device may not use the model; "
      "invalid_argument: a malformed request; ...).",
      {"reason"});
  reroutes = r->AddCounter("edgesplit_controller_reroutes_total",
                           "OpenSession calls of devices failing over: they "
                           "reported suspect nodes to route around.")
                 ->Get();
  solve_seconds = r->AddHistogram(
      "edgesplit_controller_plan_solve_duration_seconds",
      "Wall time of one planner run for a model with an automatic plan.",
      {"model"}, metrics::LatencyBuckets());
  replans = r->AddCounter(
      "edgesplit_controller_replans_total",
      "Planner runs per model, by outcome: changed (a new plan went out), "
      "kept (the running plan stays) or infeasible (no plan fits).",
      {"model", "outcome"});
}

const char* NodeStateName(const v1::NodeStatus& n) {
  if (n.address().empty()) return "unregistered";
  if (n.suspected()) return "suspected";
  return n.alive() ? "alive" : "down";
}

void AddControllerCollectors(metrics::Registry* r, Controller* controller) {
  r->AddCallback(
      metrics::Type::kGauge, "edgesplit_controller_nodes",
      "Configured servers by state: alive (beating), suspected (reported "
      "by a device since its last heartbeat), down (registered, silent) "
      "or unregistered.",
      {"state"}, [controller](const metrics::EmitFn& emit) {
        std::map<std::string, int> n = {
            {"alive", 0}, {"suspected", 0}, {"down", 0}, {"unregistered", 0}};
        const v1::ClusterStatus status = controller->ClusterStatus();
        for (const v1::NodeStatus& s : status.nodes()) {
          if (s.node() == kDeviceNode) continue;
          ++n[NodeStateName(s)];
        }
        for (const auto& [state, count] : n) emit({state}, count);
      });
  r->AddCallback(metrics::Type::kGauge,
                 "edgesplit_controller_node_open_sessions",
                 "Sessions open on each server, as its last heartbeat said.",
                 {"node"}, [controller](const metrics::EmitFn& emit) {
                   const v1::ClusterStatus status = controller->ClusterStatus();
                   for (const v1::NodeStatus& s : status.nodes()) {
                     if (s.node() == kDeviceNode || s.address().empty())
                       continue;
                     emit({s.node()}, s.open_sessions());
                   }
                 });
  r->AddCallback(metrics::Type::kGauge, "edgesplit_controller_open_sessions",
                 "Sessions the controller routed that have not closed.", {},
                 [controller](const metrics::EmitFn& emit) {
                   emit({}, controller->open_sessions());
                 });
  r->AddCallback(metrics::Type::kGauge, "edgesplit_controller_plan_version",
                 "Version of the plans in force (grows with every change).", {},
                 [controller](const metrics::EmitFn& emit) {
                   emit({}, static_cast<double>(controller->plan_version()));
                 });
}

}  // namespace edgesplit
