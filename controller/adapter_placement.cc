#include "controller/adapter_placement.h"

#include <algorithm>
#include <cmath>
#include <set>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "planner/cache_placement.h"
#include "runtime/adapter_name.h"

namespace edgesplit {

int64_t AdapterPlacementConfig::StorageOf(const std::string& node) const {
  auto it = node_storage_bytes.find(node);
  return it != node_storage_bytes.end() ? it->second : server_storage_bytes;
}

namespace {

constexpr int64_t kMaxStorageMb = int64_t{1} << 30;

absl::Status ParseWhatIf(const YamlReader& r, const YAML::Node& section,
                         AdapterPlacementConfig* c) {
  const YAML::Node list = section["what_if"];
  if (!list.IsDefined() || list.IsNull()) return absl::OkStatus();
  if (!list.IsSequence()) {
    return r.Error(list, "adapter_placement.what_if", "expected a list");
  }
  for (size_t i = 0; i < list.size(); ++i) {
    ES_ASSIGN_OR_RETURN(std::string model, r.String(list[i], "model"));
    ES_ASSIGN_OR_RETURN(std::string adapter, r.String(list[i], "adapter"));
    if (absl::Status s = ValidateAdapterName(adapter); !s.ok()) {
      return r.Error(list[i], "adapter", std::string(s.message()));
    }
    ES_ASSIGN_OR_RETURN(int64_t requests,
                        r.IntIn(list[i], "requests", 0, 0, int64_t{1} << 40));
    c->what_if[{model, adapter}] += static_cast<double>(requests);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<AdapterPlacementConfig> ParseAdapterPlacementConfig(
    const YamlReader& r, const YAML::Node& root) {
  AdapterPlacementConfig c;
  const YAML::Node section = root["adapter_placement"];
  if (!section.IsDefined() || section.IsNull()) return c;
  if (!section.IsMap()) {
    return r.Error(section, "adapter_placement", "expected a map");
  }
  ES_ASSIGN_OR_RETURN(
      int64_t mb, r.IntIn(section, "server_storage_mb", 0, 0, kMaxStorageMb));
  c.server_storage_bytes = mb << 20;
  const YAML::Node nodes = section["nodes"];
  if (nodes.IsDefined() && !nodes.IsNull()) {
    if (!nodes.IsMap()) {
      return r.Error(nodes, "adapter_placement.nodes",
                     "expected a map of node name to megabytes");
    }
    for (const auto& kv : nodes) {
      const std::string node = kv.first.as<std::string>("");
      if (node.empty()) {
        return r.Error(nodes, "adapter_placement.nodes",
                       "expected node names as keys");
      }
      ES_ASSIGN_OR_RETURN(int64_t node_mb,
                          r.IntIn(nodes, node, 0, 0, kMaxStorageMb));
      c.node_storage_bytes[node] = node_mb << 20;
    }
  }
  ES_ASSIGN_OR_RETURN(
      int64_t half_life,
      r.IntIn(section, "demand_half_life_s", 3600, 1, int64_t{86400} * 365));
  c.half_life = absl::Seconds(half_life);
  ES_ASSIGN_OR_RETURN(int64_t interval,
                      r.IntIn(section, "interval_s", 10, 0, 86400));
  c.interval = absl::Seconds(interval);
  ES_RETURN_IF_ERROR(ParseWhatIf(r, section, &c));
  return c;
}

double AdapterDemand::Decay(absl::Duration elapsed) const {
  if (elapsed <= absl::ZeroDuration()) return 1;
  return std::exp2(-absl::FDivDuration(elapsed, half_life_));
}

void AdapterDemand::Record(const std::string& model_id, const std::string& name,
                           absl::Time now) {
  absl::MutexLock lock(&mu_);
  const AdapterKey key{model_id, name};
  if (counts_.size() >= max_entries_ && counts_.count(key) == 0) {
    for (auto it = counts_.begin(); it != counts_.end();) {
      if (it->second.value * Decay(now - it->second.at) < 0.01) {
        it = counts_.erase(it);
      } else {
        ++it;
      }
    }
    if (counts_.size() >= max_entries_) return;
  }
  Count& c = counts_[key];
  if (c.value > 0) c.value *= Decay(now - c.at);
  c.value += 1;
  c.at = now;
}

std::map<AdapterKey, double> AdapterDemand::At(absl::Time now) const {
  absl::MutexLock lock(&mu_);
  std::map<AdapterKey, double> out;
  for (const auto& [key, c] : counts_) {
    out[key] = c.value * Decay(now - c.at);
  }
  return out;
}

std::map<std::string, std::vector<std::string>> ModelServers(
    const v1::GetPlanResponse& plans) {
  std::map<std::string, std::vector<std::string>> out;
  for (const v1::Plan& plan : plans.plans()) {
    std::vector<std::string>& servers = out[plan.model_id()];
    auto add = [&servers](const std::string& node) {
      if (node != "device" &&
          std::find(servers.begin(), servers.end(), node) == servers.end()) {
        servers.push_back(node);
      }
    };
    for (const v1::PlanStage& stage : plan.stages()) {
      add(stage.node());
      for (const std::string& standby : stage.standby()) add(standby);
    }
  }
  return out;
}

namespace {

// The placement problem and its index maps.
struct Instance {
  planner::CacheProblem problem;
  std::vector<const v1::RegisteredAdapter*> adapters;  // By model index.
  std::vector<std::string> servers;                    // By server index.
  std::vector<std::vector<int>> held;  // Per server: what it holds now.
};

Instance BuildInstance(const AdapterPlacementInput& in) {
  Instance x;
  std::map<std::string, int> block_index;
  for (const v1::RegisteredAdapter& a : in.adapters) {
    if (in.model_servers.count(a.model_id()) == 0) continue;
    planner::CacheModel model;
    model.name = absl::StrCat(a.model_id(), ":", a.name());
    for (const v1::AdapterFile& f : a.files()) {
      auto [it, added] = block_index.emplace(
          f.blob(), static_cast<int>(x.problem.blocks.size()));
      if (added) x.problem.blocks.push_back({f.blob(), f.bytes()});
      if (std::find(model.blocks.begin(), model.blocks.end(), it->second) ==
          model.blocks.end()) {
        model.blocks.push_back(it->second);
      }
    }
    x.problem.models.push_back(std::move(model));
    x.adapters.push_back(&a);
  }
  std::map<std::string, int> server_index;
  for (const auto& [model, servers] : in.model_servers) {
    for (const std::string& s : servers) {
      if (server_index.emplace(s, static_cast<int>(x.servers.size())).second) {
        x.servers.push_back(s);
        x.problem.servers.push_back({s, in.config.StorageOf(s)});
      }
    }
  }
  // One region per hop of each model's route: demand for that model's
  // adapters, served only by that hop.
  for (const auto& [model, servers] : in.model_servers) {
    for (const std::string& s : servers) {
      planner::CacheRegion region;
      region.name = absl::StrCat(model, "@", s);
      region.servers = {server_index[s]};
      region.demand.assign(x.adapters.size(), 0);
      for (size_t i = 0; i < x.adapters.size(); ++i) {
        if (x.adapters[i]->model_id() != model) continue;
        auto d = in.demand.find({model, x.adapters[i]->name()});
        if (d != in.demand.end()) region.demand[i] = std::max(0.0, d->second);
      }
      x.problem.regions.push_back(std::move(region));
    }
  }
  x.held.resize(x.servers.size());
  for (size_t i = 0; i < x.adapters.size(); ++i) {
    for (const std::string& holder : x.adapters[i]->holders()) {
      auto s = server_index.find(holder);
      if (s != server_index.end()) {
        x.held[s->second].push_back(static_cast<int>(i));
      }
    }
  }
  return x;
}

}  // namespace

absl::StatusOr<v1::AdapterPlacement> PlaceAdapters(
    const AdapterPlacementInput& input) {
  Instance x = BuildInstance(input);
  ES_RETURN_IF_ERROR(x.problem.Validate());
  // What servers hold may exceed their storage now (operators copy
  // adapters in; the budget may shrink): it seeds re-planning only.
  planner::CachePlacementOptions options;
  options.current = &x.held;
  ES_ASSIGN_OR_RETURN(planner::CachePlacement placed,
                      planner::PlaceCaches(x.problem, options));
  v1::AdapterPlacement out;
  for (size_t s = 0; s < x.servers.size(); ++s) {
    v1::ServerPlacement* server = out.add_servers();
    server->set_node(x.servers[s]);
    server->set_capacity_bytes(x.problem.servers[s].capacity_bytes);
    for (int m : placed.models_at[s]) {
      v1::PlacedAdapter* a = server->add_adapters();
      a->set_model_id(x.adapters[m]->model_id());
      a->set_name(x.adapters[m]->name());
    }
    server->set_stored_bytes(placed.bytes_at[s]);
    server->set_independent_bytes(
        planner::StoredBytes(x.problem, placed.models_at[s], false));
  }
  std::set<AdapterKey> placeable;
  for (const v1::RegisteredAdapter* a : x.adapters) {
    placeable.insert({a->model_id(), a->name()});
  }
  for (const auto& [key, requests] : input.demand) {
    if (requests <= 0 || placeable.count(key) == 0) continue;
    v1::AdapterRequests* d = out.add_demand();
    d->set_model_id(key.first);
    d->set_name(key.second);
    d->set_requests(requests);
  }
  out.set_hit_ratio(placed.hit_ratio);
  double total = 0;
  for (const planner::CacheRegion& r : x.problem.regions) {
    for (double d : r.demand) total += d;
  }
  for (auto& h : x.held) std::sort(h.begin(), h.end());
  out.set_held_hit_ratio(
      total > 0 ? planner::ServedDemand(x.problem, x.held) / total : 0);
  out.set_moved_bytes(placed.moved_bytes);
  out.set_exact(placed.exact);
  return out;
}

}  // namespace edgesplit
