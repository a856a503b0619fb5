#include "controller/controller.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "runtime/status_macros.h"
#include "runtime/yaml_util.h"

namespace edgesplit {
namespace {

class SystemClock : public Clock {
 public:
  absl::Time Now() override { return absl::Now(); }
};

}  // namespace

Clock* RealClock() {
  static SystemClock clock;
  return &clock;
}

absl::Status ControllerConfig::Validate() const {
  if (listen.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field \"listen\": missing"));
  }
  if (heartbeat_interval <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        source, ": field \"heartbeat_interval_ms\": must be positive"));
  }
  if (dead_after_missed < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field \"dead_after_missed\": must be >= 1"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ControllerConfig> ParseControllerConfig(
    const std::string& text, const std::string& source) {
  YamlReader r(source);
  ES_ASSIGN_OR_RETURN(YAML::Node root, r.Parse(text));
  ControllerConfig c;
  c.source = source;
  ES_ASSIGN_OR_RETURN(std::string listen, r.String(root, "listen", false));
  if (!listen.empty()) c.listen = listen;
  ES_ASSIGN_OR_RETURN(int64_t hb, r.Int(root, "heartbeat_interval_ms", 1000));
  c.heartbeat_interval = absl::Milliseconds(hb);
  ES_ASSIGN_OR_RETURN(int64_t missed, r.Int(root, "dead_after_missed", 3));
  c.dead_after_missed = static_cast<int>(missed);
  const YAML::Node nodes = root["nodes"];
  if (nodes.IsDefined() && !nodes.IsSequence()) {
    return r.Error(nodes, "nodes", "expected a list");
  }
  for (size_t i = 0; nodes.IsDefined() && i < nodes.size(); ++i) {
    NodeConfig n;
    ES_ASSIGN_OR_RETURN(n.name, r.String(nodes[i], "name"));
    ES_ASSIGN_OR_RETURN(int64_t mb, r.Int(nodes[i], "memory_mb", 0));
    if (mb < 0) return r.Error(nodes[i], "memory_mb", "must be >= 0");
    n.memory_bytes = mb << 20;
    if (n.name == kDeviceNode) {
      return r.Error(nodes[i], "name", "\"device\" is reserved");
    }
    c.nodes.push_back(std::move(n));
  }
  const YAML::Node plans = root["plans"];
  if (plans.IsDefined() && !plans.IsSequence()) {
    return r.Error(plans, "plans", "expected a list of plan files");
  }
  const auto dir = std::filesystem::path(source).parent_path();
  for (size_t i = 0; plans.IsDefined() && i < plans.size(); ++i) {
    if (!plans[i].IsScalar()) {
      return r.Error(plans[i], absl::StrCat("plans[", i, "]"),
                     "expected a file name");
    }
    std::filesystem::path p = plans[i].Scalar();
    if (p.is_relative()) p = dir / p;
    c.plan_files.push_back(p.lexically_normal().string());
  }
  ES_RETURN_IF_ERROR(c.Validate());
  return c;
}

absl::StatusOr<ControllerConfig> LoadControllerConfig(const std::string& path) {
  ES_ASSIGN_OR_RETURN(std::string text, ReadTextFile(path));
  return ParseControllerConfig(text, path);
}

Controller::Controller(ControllerConfig config, Clock* clock)
    : config_(std::move(config)), clock_(clock) {
  for (const NodeConfig& n : config_.nodes) cluster_[n.name] = n;
}

v1::ReloadPlansResponse Controller::ReloadPlans() {
  v1::ReloadPlansResponse response;
  std::map<std::string, PlanConfig> loaded;
  for (const std::string& file : config_.plan_files) {
    absl::Status s = [&]() -> absl::Status {
      ES_ASSIGN_OR_RETURN(PlanConfig plan, LoadPlanFile(file));
      ES_ASSIGN_OR_RETURN(ModelConfig model,
                          LoadModelConfig(plan.model_path + "/config.json"));
      ES_RETURN_IF_ERROR(ValidatePlan(plan, model, cluster_));
      if (loaded.count(plan.model_id) > 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            file, ": model \"", plan.model_id, "\" already has a plan in ",
            loaded[plan.model_id].source));
      }
      loaded[plan.model_id] = std::move(plan);
      return absl::OkStatus();
    }();
    if (!s.ok()) response.add_errors(std::string(s.message()));
  }
  bool changed = false;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [id, plan] : loaded) {
      response.add_loaded(id);
      auto it = plans_.find(id);
      const bool same =
          it != plans_.end() && ToProto(it->second, 0).SerializeAsString() ==
                                    ToProto(plan, 0).SerializeAsString();
      if (!same) {
        plans_[id] = std::move(plan);
        changed = true;
      }
    }
    if (changed) ++version_;
  }
  if (changed) NotifyWatchers();
  return response;
}

v1::Plan Controller::ToProto(const PlanConfig& plan, uint64_t version) {
  v1::Plan p;
  p.set_model_id(plan.model_id);
  p.set_model_path(plan.model_path);
  p.set_version(version);
  p.set_u_shaped(plan.u_shaped);
  p.set_source(plan.source);
  for (const PlanStageConfig& s : plan.stages) {
    v1::PlanStage* ps = p.add_stages();
    ps->set_node(s.node);
    ps->set_first_block(s.first_block);
    ps->set_last_block(s.last_block);
  }
  return p;
}

absl::StatusOr<v1::RegisterNodeResponse> Controller::RegisterNode(
    const v1::RegisterNodeRequest& request) {
  if (cluster_.count(request.node()) == 0) {
    return absl::NotFoundError(absl::StrCat(
        "unknown node \"", request.node(), "\" (not in ", config_.source, ")"));
  }
  if (request.address().empty()) {
    return absl::InvalidArgumentError("RegisterNode needs an address");
  }
  {
    absl::MutexLock lock(&mu_);
    Node& n = nodes_[request.node()];
    n.address = request.address();
    n.last_seen = clock_->Now();
  }
  v1::RegisterNodeResponse response;
  response.set_heartbeat_interval_ms(static_cast<uint32_t>(
      absl::ToInt64Milliseconds(config_.heartbeat_interval)));
  response.set_dead_after_missed(config_.dead_after_missed);
  return response;
}

absl::StatusOr<v1::HeartbeatResponse> Controller::Heartbeat(
    const v1::HeartbeatRequest& request) {
  absl::MutexLock lock(&mu_);
  auto it = nodes_.find(request.node());
  if (it == nodes_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "node \"", request.node(), "\" is not registered; register first"));
  }
  it->second.last_seen = clock_->Now();
  it->second.open_sessions = request.open_sessions();
  it->second.kv_used_bytes = request.kv_used_bytes();
  v1::HeartbeatResponse response;
  response.set_plan_version(version_);
  return response;
}

absl::Status Controller::CheckAlive(const std::string& node) const {
  auto it = nodes_.find(node);
  if (it == nodes_.end()) {
    return absl::UnavailableError(
        absl::StrCat("node \"", node, "\" has not registered"));
  }
  const absl::Duration silent = clock_->Now() - it->second.last_seen;
  if (silent > config_.heartbeat_interval * config_.dead_after_missed) {
    return absl::UnavailableError(absl::StrCat(
        "node \"", node, "\" (", it->second.address, ") is dead: no heartbeat ",
        "for ", absl::FormatDuration(silent)));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::GetPlanResponse> Controller::GetPlan(
    const std::string& model_id) {
  absl::MutexLock lock(&mu_);
  v1::GetPlanResponse response;
  for (const auto& [id, plan] : plans_) {
    if (model_id.empty() || id == model_id) {
      *response.add_plans() = ToProto(plan, version_);
    }
  }
  if (!model_id.empty() && response.plans_size() == 0) {
    return absl::NotFoundError(
        absl::StrCat("no plan for model \"", model_id, "\""));
  }
  return response;
}

v1::PlanUpdate Controller::PlansFor(const std::string& node) {
  absl::MutexLock lock(&mu_);
  v1::PlanUpdate update;
  for (const auto& [id, plan] : plans_) {
    for (const PlanStageConfig& s : plan.stages) {
      if (s.node == node) {
        *update.add_plans() = ToProto(plan, version_);
        break;
      }
    }
  }
  return update;
}

absl::StatusOr<v1::OpenSessionResponse> Controller::OpenSession(
    const v1::OpenSessionRequest& request) {
  absl::MutexLock lock(&mu_);
  auto it = plans_.find(request.model_id());
  if (it == plans_.end()) {
    return absl::NotFoundError(
        absl::StrCat("no plan for model \"", request.model_id(), "\""));
  }
  const PlanConfig& plan = it->second;
  v1::OpenSessionResponse response;
  *response.mutable_plan() = ToProto(plan, version_);
  response.set_device_first_block(plan.stages[0].first_block);
  response.set_device_last_block(plan.stages[0].last_block);
  for (size_t i = 1; i < plan.stages.size(); ++i) {
    const PlanStageConfig& s = plan.stages[i];
    ES_RETURN_IF_ERROR(CheckAlive(s.node));
    v1::Hop* hop = response.add_route();
    hop->set_node(s.node);
    hop->set_address(nodes_[s.node].address);
    hop->set_first_block(s.first_block);
    hop->set_last_block(s.last_block);
  }
  const std::string id = absl::StrFormat("%016x", rng_());
  response.set_session_id(id);
  sessions_[id] = request.model_id();
  return response;
}

absl::Status Controller::CloseSession(const std::string& session_id) {
  absl::MutexLock lock(&mu_);
  if (sessions_.erase(session_id) == 0) {
    return absl::NotFoundError(
        absl::StrCat("unknown session \"", session_id, "\""));
  }
  return absl::OkStatus();
}

uint64_t Controller::plan_version() const {
  absl::MutexLock lock(&mu_);
  return version_;
}

int Controller::open_sessions() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(sessions_.size());
}

int Controller::Subscribe(std::function<void()> on_change) {
  absl::MutexLock lock(&watch_mu_);
  watchers_[next_watch_id_] = std::move(on_change);
  return next_watch_id_++;
}

void Controller::Unsubscribe(int id) {
  absl::MutexLock lock(&watch_mu_);
  watchers_.erase(id);
}

void Controller::NotifyWatchers() {
  absl::MutexLock lock(&watch_mu_);
  for (auto& [id, fn] : watchers_) fn();
}

}  // namespace edgesplit
