#include "controller/status_page.h"

#include <utility>
#include <vector>

#include "absl/time/clock.h"
#include "nlohmann/json.hpp"

namespace edgesplit {
namespace {

using json = nlohmann::json;

json NodeJson(const v1::NodeStatus& n) {
  json node = {
      {"name", n.node()},
      {"state", NodeStateName(n)},
      {"address", n.address()},
      {"seconds_since_heartbeat", n.seconds_since_heartbeat()},
      {"open_sessions", n.open_sessions()},
      {"memory_bytes", n.memory_bytes()},
      {"kv_budget_bytes", n.kv_budget_bytes()},
      {"kv_used_bytes", n.kv_used_bytes()},
      {"compute", json::array()},
      {"links", json::array()},
  };
  for (const v1::ComputeProfile& c : n.compute()) {
    node["compute"].push_back(
        {{"model", c.model_id()},
         {"weights", c.weights()},
         {"decode_ms_per_block", c.decode_ms_per_block()},
         {"prefill_ms_per_token", c.prefill_ms_per_token()},
         {"head_ms", c.head_ms()}});
  }
  for (const v1::LinkProfile& l : n.links()) {
    node["links"].push_back({{"peer", l.peer()},
                             {"rtt_ms", l.rtt_ms()},
                             {"up_bytes_per_s", l.up_bytes_per_s()},
                             {"down_bytes_per_s", l.down_bytes_per_s()}});
  }
  return node;
}

json PlanJson(const v1::Plan& p) {
  json plan = {{"model", p.model_id()},      {"version", p.version()},
               {"u_shaped", p.u_shaped()},   {"planned", p.planned()},
               {"objective", p.objective()}, {"source", p.source()},
               {"stages", json::array()}};
  if (p.planned()) {
    plan["predicted"] = {{"latency_ms", p.predicted_latency_ms()},
                         {"decode_step_ms", p.predicted_decode_step_ms()},
                         {"prefill_ms", p.predicted_prefill_ms()},
                         {"bottleneck_ms", p.predicted_bottleneck_ms()}};
  }
  for (const v1::PlanStage& s : p.stages()) {
    plan["stages"].push_back(
        {{"node", s.node()},
         {"first_block", s.first_block()},
         {"last_block", s.last_block()},
         {"weights", s.weights()},
         {"standby",
          std::vector<std::string>(s.standby().begin(), s.standby().end())}});
  }
  return plan;
}

}  // namespace

std::string ControllerStatusJson(Controller& controller) {
  const v1::ClusterStatus status = controller.ClusterStatus();
  const Controller::LiveSummary live = controller.Live();
  json out = {{"time", absl::ToUnixSeconds(absl::Now())},
              {"plan_version", controller.plan_version()},
              {"nodes", json::array()},
              {"device", nullptr},
              {"plans", json::array()},
              {"planner_errors", json::array()},
              {"sessions", json::object()},
              {"jobs", json::array()}};
  for (const v1::NodeStatus& n : status.nodes()) {
    if (n.node() == kDeviceNode) {
      out["device"] = {{"memory_bytes", n.memory_bytes()},
                       {"joules_per_flop", n.joules_per_flop()},
                       {"joules_per_bit", n.joules_per_bit()}};
    } else {
      out["nodes"].push_back(NodeJson(n));
    }
  }
  for (const v1::Plan& p : status.plans()) out["plans"].push_back(PlanJson(p));
  for (const std::string& e : status.planner_errors()) {
    out["planner_errors"].push_back(e);
  }
  for (const auto& [model, n] : live.sessions_by_model)
    out["sessions"][model] = n;
  for (const auto& j : live.jobs) {
    out["jobs"].push_back(
        {{"id", j.id}, {"model", j.model_id}, {"members", j.members}});
  }
  // Names come from configs and devices: invalid UTF-8 is replaced rather
  // than failing the page.
  return out.dump(-1, ' ', false, json::error_handler_t::replace);
}

absl::StatusOr<std::unique_ptr<OpsHttp>> StartControllerHttp(
    const std::string& listen, Controller* controller,
    std::function<bool()> ready) {
  OpsHttpOptions o;
  o.listen = listen;
  o.ready = std::move(ready);
  o.metrics = controller->metrics_registry();
  o.pages.push_back(
      {"/", "text/html; charset=utf-8", [] { return ControllerStatusHtml(); }});
  o.pages.push_back({"/status.json", "application/json", [controller] {
                       return ControllerStatusJson(*controller);
                     }});
  return OpsHttp::Start(std::move(o));
}

}  // namespace edgesplit
