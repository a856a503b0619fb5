#include "controller/controller.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "base/status_macros.h"
#include "proto/protocol.h"

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

Controller::Controller(ControllerConfig config, Clock* clock)
    : config_(std::move(config)),
      clock_(clock),
      grace_ends_(clock_->Now() + config_.startup_grace) {
  for (const NodeConfig& n : config_.nodes) cluster_[n.name] = n;
  AddControllerCollectors(registry_.get(), this);
  absl::MutexLock lock(&mu_);
  settled_ = config_.startup_grace <= absl::ZeroDuration();
}

v1::ReloadPlansResponse Controller::ReloadPlans() {
  v1::ReloadPlansResponse response;
  std::map<std::string, PlanConfig> loaded;
  std::map<std::string, AutoSpec> automatic;
  for (const std::string& file : config_.plan_files) {
    absl::Status s = [&]() -> absl::Status {
      ES_ASSIGN_OR_RETURN(PlanConfig plan, LoadPlanFile(file));
      ES_ASSIGN_OR_RETURN(ModelConfig model,
                          LoadModelConfig(plan.model_path + "/config.json"));
      if (loaded.count(plan.model_id) > 0 ||
          automatic.count(plan.model_id) > 0) {
        return absl::InvalidArgumentError(absl::StrCat(
            file, ": model \"", plan.model_id, "\" already has a plan"));
      }
      if (plan.automatic) {
        ES_RETURN_IF_ERROR(ValidateAutomaticPlan(plan, model, cluster_));
        const std::string id = plan.model_id;
        automatic[id] = {std::move(plan), std::move(model)};
        return absl::OkStatus();
      }
      ES_RETURN_IF_ERROR(ValidatePlan(plan, model, cluster_));
      loaded[plan.model_id] = std::move(plan);
      return absl::OkStatus();
    }();
    if (!s.ok()) response.add_errors(std::string(s.message()));
  }
  bool changed = false;
  {
    absl::MutexLock lock(&mu_);
    for (auto& [id, spec] : automatic) {
      response.add_loaded(id);
      specs_[id] = std::move(spec);
    }
    if (!automatic.empty()) changed |= ReplanLocked();
    for (auto& [id, plan] : loaded) {
      response.add_loaded(id);
      specs_.erase(id);
      predictions_.erase(id);
      planner_errors_.erase(id);
      auto it = plans_.find(id);
      const bool same = it != plans_.end() && !it->second.automatic &&
                        ToProto(it->second, 0).SerializeAsString() ==
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

v1::Plan Controller::ToProtoLocked(const PlanConfig& plan) const {
  v1::Plan p = ToProto(plan, version_);
  auto it = predictions_.find(plan.model_id);
  if (plan.automatic && it != predictions_.end()) {
    p.set_planned(true);
    p.set_objective(plan.planner.objective);
    p.set_predicted_latency_ms(it->second.latency_ms);
    p.set_predicted_decode_step_ms(it->second.decode_step_ms);
    p.set_predicted_prefill_ms(it->second.prefill_ms);
    p.set_predicted_bottleneck_ms(it->second.bottleneck_ms);
  }
  return p;
}

bool Controller::UsableLocked(const std::string& node) const {
  if (!CheckAlive(node).ok()) return false;
  const Node& n = nodes_.at(node);
  return n.last_seen > n.suspected_at;
}

std::set<std::string> Controller::UsableSetLocked() const {
  std::set<std::string> out;
  for (const auto& [name, n] : nodes_) {
    if (UsableLocked(name)) out.insert(name);
  }
  return out;
}

bool Controller::ReplanLocked() {
  planned_with_ = UsableSetLocked();
  bool changed = false;
  for (const auto& [id, auto_spec] : specs_) {
    std::vector<NodeView> servers;
    for (const std::string& name : planned_with_) {
      const Node& n = nodes_.at(name);
      NodeView v;
      v.name = name;
      v.memory_bytes = cluster_.at(name).memory_bytes > 0
                           ? cluster_.at(name).memory_bytes
                           : n.memory_bytes;
      auto c = n.compute.find(id);
      // A stage pinned here with its own weight type is priced at that
      // type's measured speed, once the node has measured it.
      for (const PlanStageConfig& pinned : auto_spec.spec.stages) {
        if (pinned.node != name || pinned.weights.empty()) continue;
        auto typed = n.compute.find(ComputeKey(id, pinned.weights));
        if (typed != n.compute.end()) c = typed;
      }
      v.has_compute = c != n.compute.end();
      if (v.has_compute) v.compute = c->second;
      v.links = n.links;
      servers.push_back(std::move(v));
    }
    NodeView device = device_;
    device.name = kDeviceNode;
    auto dc = device_compute_.find(id);
    device.has_compute = dc != device_compute_.end();
    if (device.has_compute) device.compute = dc->second;
    planner::PlanResult predicted;
    const auto solve_start = std::chrono::steady_clock::now();
    auto plan = PlanAutomatically(auto_spec.spec, auto_spec.model, servers,
                                  device, config_.default_link, &predicted);
    metrics_.solve_seconds->With({id})->Observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() -
                                      solve_start)
            .count());
    // (C++17 lambdas cannot capture structured bindings.)
    auto outcome = [this, model = id](const char* what) {
      metrics_.replans->With({model, what})->Increment();
    };
    if (!plan.ok()) {
      outcome("infeasible");
      // The running plan (if any) stays; sessions on dead nodes fail over
      // when a plan becomes possible again.
      planner_errors_[id] = std::string(plan.status().message());
      continue;
    }
    planner_errors_.erase(id);
    auto it = plans_.find(id);
    if (it != plans_.end() && it->second.automatic) {
      // Keep the running plan unless the new one is clearly better.
      auto current = EvaluatePlan(auto_spec.spec, auto_spec.model, servers,
                                  device, config_.default_link, it->second);
      // Energy plans often tie on joules (the device's share is fixed by
      // its minimum): then latency decides, with the same margin.
      const double gain = 1 - config_.replan_min_gain;
      const bool better =
          current.ok() &&
          (predicted.objective_value < current->objective_value * gain ||
           (auto_spec.spec.planner.objective == "energy" &&
            predicted.objective_value <= current->objective_value &&
            predicted.latency_ms < current->latency_ms * gain));
      if (current.ok() && !better) {
        predictions_[id] = *current;
        outcome("kept");
        continue;
      }
    }
    predictions_[id] = predicted;
    if (it == plans_.end() || ToProto(it->second, 0).SerializeAsString() !=
                                  ToProto(*plan, 0).SerializeAsString()) {
      plans_[id] = *std::move(plan);
      changed = true;
      outcome("changed");
    } else {
      outcome("kept");
    }
  }
  if (changed) ++version_;
  return changed;
}

bool Controller::ReplanIfMembershipChangedLocked() {
  if (specs_.empty() || UsableSetLocked() == planned_with_) return false;
  return ReplanLocked();
}

v1::ProfileRequest Controller::ProfileRequestLocked(const std::string& node,
                                                    uint64_t* version) const {
  v1::ProfileRequest r;
  for (const auto& [id, spec] : specs_) {
    auto* m = r.add_models();
    m->set_model_id(id);
    m->set_model_path(spec.spec.model_path);
    m->set_model_copy(spec.spec.model_copy);
    for (const PlanStageConfig& pinned : spec.spec.stages) {
      if (pinned.node == node && !pinned.weights.empty()) {
        m->add_weights(pinned.weights);
      }
    }
  }
  for (const auto& [name, n] : nodes_) {
    // Dead nodes would cost every prober a timeout.
    if (name == node || !UsableLocked(name)) continue;
    v1::Hop* peer = r.add_peers();
    peer->set_node(name);
    peer->set_address(n.peer_address.empty() ? n.address : n.peer_address);
  }
  *version = std::hash<std::string>{}(r.SerializeAsString()) | 1;
  return r;
}

v1::Plan Controller::ToProto(const PlanConfig& plan, uint64_t version) {
  v1::Plan p;
  p.set_model_id(plan.model_id);
  p.set_model_path(plan.model_path);
  p.set_model_copy(plan.model_copy);
  p.set_version(version);
  p.set_u_shaped(plan.u_shaped);
  p.set_source(plan.source);
  if (plan.privacy.max_epsilon > 0) {
    p.mutable_privacy()->set_max_epsilon(plan.privacy.max_epsilon);
    p.mutable_privacy()->set_max_delta(plan.privacy.max_delta);
  }
  for (const PlanStageConfig& s : plan.stages) {
    v1::PlanStage* ps = p.add_stages();
    ps->set_node(s.node);
    ps->set_first_block(s.first_block);
    ps->set_last_block(s.last_block);
    ps->set_weights(s.weights);
    for (const std::string& n : s.standby) ps->add_standby(n);
  }
  return p;
}

absl::Status Controller::CheckProfiles(
    const google::protobuf::RepeatedPtrField<v1::ComputeProfile>& compute,
    const google::protobuf::RepeatedPtrField<v1::LinkProfile>& links) const {
  // Bounded: profiles come from the network and are kept.
  constexpr int kMaxEntries = 256;
  if (compute.size() > kMaxEntries || links.size() > kMaxEntries) {
    return absl::InvalidArgumentError(
        absl::StrCat("more than ", kMaxEntries, " profile entries"));
  }
  for (const v1::ComputeProfile& c : compute)
    ES_RETURN_IF_ERROR(ValidateProfile(c));
  for (const v1::LinkProfile& l : links) ES_RETURN_IF_ERROR(ValidateLink(l));
  return absl::OkStatus();
}

void Controller::KeepPlannedModels(
    const google::protobuf::RepeatedPtrField<v1::ComputeProfile>& compute,
    std::map<std::string, v1::ComputeProfile>* out) const {
  // Only the models being planned: anything else would be kept for nothing.
  for (const v1::ComputeProfile& c : compute) {
    if (specs_.count(c.model_id()) > 0) {
      (*out)[ComputeKey(c.model_id(), c.weights())] = c;
    }
  }
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
  ES_RETURN_IF_ERROR(CheckProfiles(request.compute(), {}));
  v1::RegisterNodeResponse response;
  bool changed;
  {
    absl::MutexLock lock(&mu_);
    Node& n = nodes_[request.node()];
    n.draining = false;  // Registered anew: serving again.
    n.address = request.address();
    n.peer_address = request.peer_address();
    n.last_seen = clock_->Now();
    n.memory_bytes = request.resources().memory_bytes();
    n.kv_budget_bytes = request.resources().kv_budget_bytes();
    KeepPlannedModels(request.compute(), &n.compute);
    changed = !specs_.empty() && ReplanLocked();
    uint64_t version;
    *response.mutable_profile() =
        ProfileRequestLocked(request.node(), &version);
    response.set_profile_version(version);
  }
  if (changed) NotifyWatchers();
  response.set_heartbeat_interval_ms(static_cast<uint32_t>(
      absl::ToInt64Milliseconds(config_.heartbeat_interval)));
  response.set_dead_after_missed(config_.dead_after_missed);
  return response;
}

absl::StatusOr<v1::HeartbeatResponse> Controller::Heartbeat(
    const v1::HeartbeatRequest& request) {
  const absl::Status profile_ok =
      CheckProfiles(request.compute(), request.links());
  v1::HeartbeatResponse response;
  bool changed = false;
  {
    absl::MutexLock lock(&mu_);
    auto it = nodes_.find(request.node());
    if (it == nodes_.end()) {
      return absl::NotFoundError(absl::StrCat(
          "node \"", request.node(), "\" is not registered; register first"));
    }
    // The beat counts even when its profile is refused: the node is alive.
    Node& n = it->second;
    n.last_seen = clock_->Now();
    n.open_sessions = request.open_sessions();
    n.kv_used_bytes = request.kv_used_bytes();
    const bool profiled = profile_ok.ok() && (request.compute_size() > 0 ||
                                              request.links_size() > 0);
    if (profiled) {
      KeepPlannedModels(request.compute(), &n.compute);
      n.links.assign(request.links().begin(), request.links().end());
    }
    if (profiled && !specs_.empty()) {
      changed = ReplanLocked();
    } else {
      changed = ReplanIfMembershipChangedLocked();
    }
    if (!settled_ && n.last_seen >= grace_ends_) {
      // Servers may retire stages no plan names from now on.
      settled_ = true;
      changed = true;
    }
    uint64_t version;
    *response.mutable_profile() =
        ProfileRequestLocked(request.node(), &version);
    response.set_profile_version(version);
    response.set_plan_version(version_);
  }
  if (changed) NotifyWatchers();
  if (!profile_ok.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("node \"", request.node(),
                                                   "\": ", profile_ok.message(),
                                                   " (profile ignored)"));
  }
  return response;
}

absl::Status Controller::CheckAlive(const std::string& node) const {
  auto it = nodes_.find(node);
  if (it == nodes_.end()) {
    return absl::UnavailableError(
        absl::StrCat("node \"", node, "\" has not registered"));
  }
  if (it->second.draining) {
    return absl::UnavailableError(
        absl::StrCat("node \"", node, "\" is draining (shutting down)"));
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
      *response.add_plans() = ToProtoLocked(plan);
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
  if (signer_) update.set_grant_public_key(signer_->public_key());
  update.set_keep_unlisted(!settled_);
  for (const auto& [id, plan] : plans_) {
    for (const PlanStageConfig& s : plan.stages) {
      if (s.node == node || std::find(s.standby.begin(), s.standby.end(),
                                      node) != s.standby.end()) {
        *update.add_plans() = ToProtoLocked(plan);
        break;
      }
    }
  }
  return update;
}

namespace {

// Measurements of the same link differ a little every time; re-planning on
// each would be wasted work under the controller's lock.
bool LinkChanged(
    const std::vector<v1::LinkProfile>& before,
    const google::protobuf::RepeatedPtrField<v1::LinkProfile>& now) {
  if (static_cast<int>(before.size()) != now.size()) return true;
  auto far = [](double a, double b) {
    return std::abs(a - b) > 0.1 * std::max(std::abs(a), std::abs(b));
  };
  for (int i = 0; i < now.size(); ++i) {
    const v1::LinkProfile& a = before[i];
    const v1::LinkProfile& b = now.Get(i);
    if (a.peer() != b.peer() || far(a.rtt_ms(), b.rtt_ms()) ||
        far(a.up_bytes_per_s(), b.up_bytes_per_s()) ||
        far(a.down_bytes_per_s(), b.down_bytes_per_s())) {
      return true;
    }
  }
  return false;
}

}  // namespace

absl::Status Controller::CheckDeviceProfile(const v1::DeviceProfile& dp) const {
  ES_RETURN_IF_ERROR(CheckProfiles(dp.compute(), dp.links()));
  if (dp.memory_bytes() < 0) {
    return absl::InvalidArgumentError("device profile: memory_bytes < 0");
  }
  for (double j : {dp.joules_per_flop(), dp.joules_per_bit()}) {
    if (!std::isfinite(j) || j < 0 || j > 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "device profile: joules per flop/bit ", j, " is not in [0, 1]"));
    }
  }
  return absl::OkStatus();
}

bool Controller::ApplyDeviceProfileLocked(const v1::DeviceProfile& p) {
  bool replan = false;
  std::map<std::string, v1::ComputeProfile> compute = device_compute_;
  KeepPlannedModels(p.compute(), &compute);
  for (const auto& [id, c] : compute) {
    auto old = device_compute_.find(id);
    replan |= old == device_compute_.end() ||
              old->second.SerializeAsString() != c.SerializeAsString();
  }
  device_compute_ = std::move(compute);
  if (p.links_size() > 0 && LinkChanged(device_.links, p.links())) {
    device_.links.assign(p.links().begin(), p.links().end());
    replan = true;
  }
  replan |= device_.memory_bytes != p.memory_bytes() ||
            device_.joules_per_flop != p.joules_per_flop() ||
            device_.joules_per_bit != p.joules_per_bit();
  device_.memory_bytes = p.memory_bytes();
  device_.joules_per_flop = p.joules_per_flop();
  device_.joules_per_bit = p.joules_per_bit();
  return replan;
}

absl::StatusOr<v1::OpenSessionResponse> Controller::OpenSession(
    const v1::OpenSessionRequest& request) {
  auto opened = OpenSessionCounted(request);
  // A failover: counted once its request passed the checks.
  if (request.suspects_size() > 0 &&
      opened.status().code() != absl::StatusCode::kInvalidArgument) {
    metrics_.reroutes->Increment();
  }
  if (opened.ok()) {
    metrics_.sessions_opened
        ->With({request.model_id(),
                request.training_job().empty() ? "inference" : "training"})
        ->Increment();
  } else {
    metrics_.open_failures
        ->With({metrics::ReasonLabel(static_cast<int>(opened.status().code()))})
        ->Increment();
  }
  return opened;
}

absl::StatusOr<v1::OpenSessionResponse> Controller::OpenSessionCounted(
    const v1::OpenSessionRequest& request) {
  ES_RETURN_IF_ERROR(CheckDeviceProfile(request.profile()));
  ES_RETURN_IF_ERROR(AuthorizeDevice(request));
  if (request.suspects_size() > 64) {
    return absl::InvalidArgumentError("more than 64 suspects");
  }
  bool changed = false;
  auto response = [&]() -> absl::StatusOr<v1::OpenSessionResponse> {
    absl::MutexLock lock(&mu_);
    bool replan = false;
    if (request.has_profile())
      replan |= ApplyDeviceProfileLocked(request.profile());
    const bool counts = request.suspects_size() > 0 &&
                        CountSuspectReportLocked(request.device());
    for (const std::string& suspect : request.suspects()) {
      if (!counts) break;
      auto n = nodes_.find(suspect);
      if (n != nodes_.end()) {
        n->second.suspected_at = clock_->Now();
        replan = true;
      }
    }
    if (!specs_.empty()) {
      changed = replan ? ReplanLocked() : ReplanIfMembershipChangedLocked();
    }
    if (!request.training_job().empty()) {
      ES_RETURN_IF_ERROR(AdmitToJobLocked(request));
    }
    return OpenSessionLocked(request);
  }();
  if (changed) NotifyWatchers();
  if (!response.ok() || !signer_) return response;
  ES_RETURN_IF_ERROR(SignGrant(request, &*response));
  return response;
}

absl::StatusOr<v1::OpenSessionResponse> Controller::OpenSessionLocked(
    const v1::OpenSessionRequest& request) {
  auto err = planner_errors_.find(request.model_id());
  auto it = plans_.find(request.model_id());
  if (it == plans_.end() && err != planner_errors_.end()) {
    return absl::UnavailableError(err->second);
  }
  if (it == plans_.end()) {
    return absl::NotFoundError(
        absl::StrCat("no plan for model \"", request.model_id(), "\""));
  }
  const PlanConfig& plan = it->second;
  v1::OpenSessionResponse response;
  *response.mutable_plan() = ToProtoLocked(plan);
  response.set_device_first_block(plan.stages[0].first_block);
  response.set_device_last_block(plan.stages[0].last_block);
  for (size_t i = 1; i < plan.stages.size(); ++i) {
    const PlanStageConfig& s = plan.stages[i];
    // The pinned node, or else the first standby that can take its place.
    std::string node = s.node;
    for (auto sb = s.standby.begin();
         !UsableLocked(node) && sb != s.standby.end(); ++sb) {
      if (UsableLocked(*sb)) node = *sb;
    }
    ES_RETURN_IF_ERROR(CheckAlive(node));
    if (!UsableLocked(node)) {
      // A pinned plan has no way around it; an automatic one may once the
      // live nodes among the suspects beat again.
      return absl::Status(
          plan.automatic ? absl::StatusCode::kUnavailable
                         : absl::StatusCode::kFailedPrecondition,
          absl::StrCat("node \"", s.node,
                       "\" is suspected down and no plan avoids it",
                       err != planner_errors_.end() ? ": " + err->second : ""));
    }
    v1::Hop* hop = response.add_route();
    hop->set_node(node);
    hop->set_address(nodes_[node].address);
    hop->set_peer_address(nodes_[node].peer_address);
    hop->set_first_block(s.first_block);
    hop->set_last_block(s.last_block);
  }
  const absl::Time now = clock_->Now();
  if (now - last_sweep_ > absl::Minutes(1)) {
    last_sweep_ = now;
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      const bool stale = now - it->second.opened > config_.session_record_ttl;
      it = stale ? sessions_.erase(it) : std::next(it);
    }
  }
  if (sessions_.size() >= kMaxSessionRecords) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the controller holds ", sessions_.size(),
        " open sessions, its limit; sessions not closed are forgotten after "
        "session_record_ttl_s (",
        absl::ToInt64Seconds(config_.session_record_ttl), ")"));
  }
  const std::string id = absl::StrFormat("%016x", rng_());
  response.set_session_id(id);
  sessions_[id] = {request.model_id(), now};
  return response;
}

absl::Status Controller::CloseSession(const std::string& session_id) {
  v1::CloseSessionRequest request;
  request.set_session_id(session_id);
  return CloseSession(request);
}

absl::Status Controller::CloseSession(const v1::CloseSessionRequest& request) {
  // A device's measurements may come with the close: a short-lived client
  // (the CLI) measures after its session opened and reports here.
  ES_RETURN_IF_ERROR(CheckDeviceProfile(request.profile()));
  bool changed = false;
  absl::Status status;
  {
    absl::MutexLock lock(&mu_);
    if (sessions_.erase(request.session_id()) == 0) {
      status = absl::NotFoundError(
          absl::StrCat("unknown session \"", request.session_id(), "\""));
    }
    if (request.has_profile() && ApplyDeviceProfileLocked(request.profile()) &&
        !specs_.empty()) {
      changed = ReplanLocked();
    }
  }
  if (changed) NotifyWatchers();
  return status;
}

v1::ClusterStatus Controller::ClusterStatus() {
  v1::ClusterStatus status;
  absl::MutexLock lock(&mu_);
  const absl::Time now = clock_->Now();
  for (const auto& [name, cfg] : cluster_) {
    v1::NodeStatus* ns = status.add_nodes();
    ns->set_node(name);
    auto it = nodes_.find(name);
    if (it == nodes_.end()) continue;
    const Node& n = it->second;
    ns->set_address(n.address);
    ns->set_alive(CheckAlive(name).ok());
    ns->set_suspected(n.suspected_at >= n.last_seen);
    ns->set_seconds_since_heartbeat(absl::ToDoubleSeconds(now - n.last_seen));
    ns->set_open_sessions(n.open_sessions);
    ns->set_memory_bytes(cfg.memory_bytes > 0 ? cfg.memory_bytes
                                              : n.memory_bytes);
    ns->set_kv_budget_bytes(n.kv_budget_bytes);
    ns->set_kv_used_bytes(n.kv_used_bytes);
    for (const auto& [id, c] : n.compute) *ns->add_compute() = c;
    for (const auto& l : n.links) *ns->add_links() = l;
  }
  v1::NodeStatus* dev = status.add_nodes();
  dev->set_node(kDeviceNode);
  dev->set_memory_bytes(device_.memory_bytes);
  dev->set_joules_per_flop(device_.joules_per_flop);
  dev->set_joules_per_bit(device_.joules_per_bit);
  for (const auto& [id, c] : device_compute_) *dev->add_compute() = c;
  for (const auto& l : device_.links) *dev->add_links() = l;
  for (const auto& [id, plan] : plans_)
    *status.add_plans() = ToProtoLocked(plan);
  for (const auto& [id, e] : planner_errors_) status.add_planner_errors(e);
  return status;
}

absl::Status Controller::Drain(const std::string& node) {
  bool changed = false;
  {
    absl::MutexLock lock(&mu_);
    auto it = nodes_.find(node);
    if (it == nodes_.end()) {
      return absl::NotFoundError(
          absl::StrCat("node \"", node, "\" is not registered"));
    }
    it->second.draining = true;
    changed = ReplanIfMembershipChangedLocked();
  }
  if (changed) NotifyWatchers();
  return absl::OkStatus();
}

uint64_t Controller::plan_version() const {
  absl::MutexLock lock(&mu_);
  return version_;
}

Controller::LiveSummary Controller::Live() const {
  LiveSummary out;
  absl::MutexLock lock(&mu_);
  for (const auto& [id, record] : sessions_) {
    ++out.sessions_by_model[record.model_id];
  }
  for (const auto& [id, job] : jobs_) {
    out.jobs.push_back(
        {id, job.model_id, {job.members.begin(), job.members.end()}});
  }
  return out;
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
