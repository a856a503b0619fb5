#include "controller/cluster_file.h"

#include <cmath>
#include <map>
#include <set>

#include "absl/strings/str_cat.h"
#include "base/file_util.h"
#include "base/status_macros.h"
#include "base/yaml_util.h"

namespace edgesplit {
namespace {

absl::StatusOr<double> Number(const YamlReader& r, const YAML::Node& parent,
                              const std::string& field, double fallback,
                              const std::string& path) {
  ES_ASSIGN_OR_RETURN(const YAML::Node n, r.Field(parent, field));
  if (!n.IsDefined()) return fallback;
  double v = 0;
  if (!n.IsScalar() || !YAML::convert<double>::decode(n, v) ||
      !std::isfinite(v) || v < 0) {
    return r.Error(n, path + field, "expected a number >= 0");
  }
  return v;
}

absl::StatusOr<NodeView> ParseNode(const YamlReader& r, const YAML::Node& n,
                                   const std::string& path, bool device) {
  if (!n.IsMap()) return r.Error(n, path, "expected a mapping");
  NodeView v;
  if (device) {
    v.name = kDeviceNode;
  } else {
    ES_ASSIGN_OR_RETURN(v.name, r.String(n, "name"));
    if (v.name == kDeviceNode)
      return r.Error(n, path + ".name", "\"device\" is reserved");
  }
  const std::string p = path + ".";
  ES_ASSIGN_OR_RETURN(double decode,
                      Number(r, n, "decode_ms_per_block", -1, p));
  if (decode < 0) {
    if (!device) return r.Error(n, p + "decode_ms_per_block", "missing");
  } else {
    v.has_compute = true;
    v.compute.set_decode_ms_per_block(decode);
    ES_ASSIGN_OR_RETURN(double prefill,
                        Number(r, n, "prefill_ms_per_token", decode / 20, p));
    ES_ASSIGN_OR_RETURN(double head, Number(r, n, "head_ms", decode, p));
    ES_ASSIGN_OR_RETURN(double overhead, Number(r, n, "overhead_ms", 0, p));
    v.compute.set_prefill_ms_per_token(prefill);
    v.compute.set_head_ms(head);
    v.compute.set_overhead_ms(overhead);
  }
  ES_ASSIGN_OR_RETURN(double mb, Number(r, n, "memory_mb", 0, p));
  if (mb > 1e12) return r.Error(n, p + "memory_mb", "is too large");
  v.memory_bytes = static_cast<int64_t>(mb * (1 << 20));
  if (device) {
    // Energy in friendlier units: picojoules per FLOP, nanojoules per bit.
    ES_ASSIGN_OR_RETURN(double pj, Number(r, n, "pj_per_flop", 0, p));
    ES_ASSIGN_OR_RETURN(double nj, Number(r, n, "nj_per_bit", 0, p));
    v.joules_per_flop = pj * 1e-12;
    v.joules_per_bit = nj * 1e-9;
  }
  return v;
}

}  // namespace

absl::StatusOr<ClusterFile> ParseClusterFile(const std::string& text,
                                             const std::string& source) {
  YamlReader r(source);
  ES_ASSIGN_OR_RETURN(YAML::Node root, r.Parse(text));
  ClusterFile c;
  c.device.name = kDeviceNode;
  if (root["device"].IsDefined()) {
    ES_ASSIGN_OR_RETURN(c.device, ParseNode(r, root["device"], "device", true));
  }
  const YAML::Node servers = root["servers"];
  if (!servers.IsDefined() || !servers.IsSequence() || servers.size() == 0) {
    return r.Error(root, "servers", "missing (a list of servers)");
  }
  std::set<std::string> names = {kDeviceNode};
  std::map<std::string, size_t> index;
  for (size_t i = 0; i < servers.size(); ++i) {
    const std::string path = absl::StrCat("servers[", i, "]");
    ES_ASSIGN_OR_RETURN(NodeView v, ParseNode(r, servers[i], path, false));
    if (!names.insert(v.name).second) {
      return r.Error(servers[i], path + ".name",
                     absl::StrCat("\"", v.name, "\" appears twice"));
    }
    index[v.name] = i;
    c.servers.push_back(std::move(v));
  }
  auto view = [&](const std::string& name) -> NodeView* {
    if (name == kDeviceNode) return &c.device;
    auto it = index.find(name);
    return it == index.end() ? nullptr : &c.servers[it->second];
  };
  const YAML::Node link_default = root["default_link"];
  if (link_default.IsDefined()) {
    ES_ASSIGN_OR_RETURN(
        double mbit, Number(r, link_default, "mbit_s", 1000, "default_link."));
    ES_ASSIGN_OR_RETURN(double rtt,
                        Number(r, link_default, "rtt_ms", 1, "default_link."));
    if (mbit <= 0)
      return r.Error(link_default, "default_link.mbit_s", "must be > 0");
    c.default_link = {mbit * 1e6 / 8, rtt};
  }
  const YAML::Node links = root["links"];
  if (links.IsDefined() && !links.IsSequence()) {
    return r.Error(links, "links", "expected a list");
  }
  // (from, to) -> (bytes/s, rtt)
  std::map<std::pair<std::string, std::string>, std::pair<double, double>>
      directed;
  for (size_t i = 0; links.IsDefined() && i < links.size(); ++i) {
    const std::string path = absl::StrCat("links[", i, "]");
    const YAML::Node l = links[i];
    if (!l.IsMap())
      return r.Error(l, path, "expected from, to, mbit_s, rtt_ms");
    ES_ASSIGN_OR_RETURN(std::string from, r.String(l, "from"));
    ES_ASSIGN_OR_RETURN(std::string to, r.String(l, "to"));
    for (const std::string& n : {from, to}) {
      if (view(n) == nullptr) {
        return r.Error(l, path, absl::StrCat("unknown node \"", n, "\""));
      }
    }
    if (from == to) return r.Error(l, path, "a link joins two different nodes");
    ES_ASSIGN_OR_RETURN(double mbit, Number(r, l, "mbit_s", -1, path + "."));
    if (mbit <= 0) return r.Error(l, path + ".mbit_s", "missing or not > 0");
    ES_ASSIGN_OR_RETURN(double rtt, Number(r, l, "rtt_ms", 0, path + "."));
    directed[{from, to}] = {mbit * 1e6 / 8, rtt};
  }
  for (const auto& [ends, speed] : directed) {
    auto back = directed.find({ends.second, ends.first});
    v1::LinkProfile lp;
    lp.set_peer(ends.second);
    lp.set_rtt_ms(speed.second);
    lp.set_up_bytes_per_s(speed.first);
    lp.set_down_bytes_per_s(back != directed.end() ? back->second.first
                                                   : speed.first);
    view(ends.first)->links.push_back(lp);
  }
  // The planner section and pins, parsed as in a plan file.
  YAML::Node plan_part;
  plan_part["model"]["id"] = "what-if";
  plan_part["model"]["path"] = "/";
  plan_part["planner"] = root["planner"].IsDefined()
                             ? root["planner"]
                             : YAML::Node(YAML::NodeType::Map);
  if (root["stages"].IsDefined()) plan_part["stages"] = root["stages"];
  YAML::Emitter emitter;
  emitter << plan_part;
  ES_ASSIGN_OR_RETURN(c.spec, ParsePlanYaml(emitter.c_str(), source));
  for (const PlanStageConfig& s : c.spec.stages) {
    if (view(s.node) == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          source, ": field \"stages\": unknown node \"", s.node, "\""));
    }
  }
  return c;
}

absl::StatusOr<ClusterFile> LoadClusterFile(const std::string& path) {
  ES_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseClusterFile(text, path);
}

std::string PlanToYaml(const PlanConfig& plan) {
  std::string out = absl::StrCat(
      "# Written by `edgesplit plan`.\nmodel: {id: ", plan.model_id,
      ", path: ", plan.model_path,
      plan.model_copy.empty() ? "" : absl::StrCat(", copy: ", plan.model_copy),
      "}\nu_shaped: ", plan.u_shaped ? "true" : "false", "\nstages:\n");
  for (const PlanStageConfig& s : plan.stages) {
    absl::StrAppend(&out, "  - {node: ", s.node, ", blocks: [", s.first_block,
                    ", ", s.last_block, "]}\n");
  }
  return out;
}

}  // namespace edgesplit
