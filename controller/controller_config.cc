// The controller's YAML configuration: parsing into ControllerConfig and
// its validation (declared in controller.h).
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "base/file_util.h"
#include "base/status_macros.h"
#include "base/yaml_util.h"
#include "controller/controller.h"
#include "ops/ops_http.h"

namespace edgesplit {

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
  for (const NodeConfig& n : nodes) {
    absl::Status s = CheckIdentityName("node name", n.name);
    if (!s.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(source, ": field \"nodes\": ", s.message()));
    }
  }
  ES_RETURN_IF_ERROR(tls.Validate(source));
  auto bad = [&](const char* field, const std::string& what) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field \"", field, "\": ", what));
  };
  if (!tls.insecure && grant_key_file.empty()) {
    return bad("grant_key",
               "missing: with mutual TLS the controller signs every "
               "session's route (`edgesplit certs init` writes grant.key)");
  }
  if (grant_ttl < absl::Seconds(1)) return bad("grant_ttl_s", "must be >= 1");
  if (max_route_hops < 1 || max_route_hops > 1024) {
    return bad("max_route_hops", "must be in [1, 1024]");
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
  ES_ASSIGN_OR_RETURN(c.http_listen, r.String(root, "http_listen", false));
  if (!c.http_listen.empty()) {
    if (auto a = ParseListenAddress(c.http_listen); !a.ok()) {
      return r.Error(root["http_listen"], "http_listen",
                     std::string(a.status().message()));
    }
  }
  ES_ASSIGN_OR_RETURN(int64_t hb,
                      r.IntIn(root, "heartbeat_interval_ms", 1000, 1, 3600000));
  c.heartbeat_interval = absl::Milliseconds(hb);
  ES_ASSIGN_OR_RETURN(int64_t missed,
                      r.IntIn(root, "dead_after_missed", 3, 1, 1000));
  c.dead_after_missed = static_cast<int>(missed);
  ES_ASSIGN_OR_RETURN(c.tls, ParseTlsConfig(r, root));
  ES_ASSIGN_OR_RETURN(c.grant_key_file, r.String(root, "grant_key", false));
  if (!c.grant_key_file.empty() &&
      std::filesystem::path(c.grant_key_file).is_relative()) {
    c.grant_key_file =
        (std::filesystem::path(source).parent_path() / c.grant_key_file)
            .string();
  }
  ES_ASSIGN_OR_RETURN(int64_t ttl, r.IntIn(root, "grant_ttl_s", 60, 1, 86400));
  ES_ASSIGN_OR_RETURN(c.state_dir, r.String(root, "state_dir", false));
  if (!c.state_dir.empty() &&
      std::filesystem::path(c.state_dir).is_relative()) {
    c.state_dir =
        (std::filesystem::path(source).parent_path() / c.state_dir).string();
  }
  ES_ASSIGN_OR_RETURN(
      int64_t record_ttl,
      r.IntIn(root, "session_record_ttl_s", 86400, 60, int64_t{86400} * 365));
  c.session_record_ttl = absl::Seconds(record_ttl);
  ES_ASSIGN_OR_RETURN(int64_t fed_mb,
                      r.IntIn(root, "fed_memory_mb", 1024, 1, 1 << 24));
  c.fed_memory_bytes = fed_mb << 20;
  ES_ASSIGN_OR_RETURN(int64_t round_s,
                      r.IntIn(root, "fed_round_timeout_s", 600, 1, 86400));
  c.fed_round_timeout = absl::Seconds(round_s);
  ES_ASSIGN_OR_RETURN(c.fed_selection, ParseFedSelection(r, root));
  ES_ASSIGN_OR_RETURN(c.adapter_placement,
                      ParseAdapterPlacementConfig(r, root));
  ES_ASSIGN_OR_RETURN(int64_t grace,
                      r.IntIn(root, "startup_grace_s", 10, 0, 3600));
  c.startup_grace = absl::Seconds(grace);
  c.grant_ttl = absl::Seconds(ttl);
  ES_RETURN_IF_ERROR(ParseDeviceAccess(r, root, &c));
  ES_ASSIGN_OR_RETURN(
      int64_t reports,
      r.IntIn(root, "suspect_reports_per_minute", 6, 0, 1 << 20));
  c.suspect_reports_per_minute =
      static_cast<int>(std::clamp<int64_t>(reports, 0, 1 << 20));
  ES_ASSIGN_OR_RETURN(int64_t hops, r.IntIn(root, "max_route_hops",
                                            kDefaultMaxRouteHops, 1, 1024));
  c.max_route_hops = static_cast<int>(std::clamp<int64_t>(hops, 0, 1 << 20));
  const YAML::Node nodes = root["nodes"];
  if (nodes.IsDefined() && !nodes.IsSequence()) {
    return r.Error(nodes, "nodes", "expected a list");
  }
  for (size_t i = 0; nodes.IsDefined() && i < nodes.size(); ++i) {
    NodeConfig n;
    ES_ASSIGN_OR_RETURN(n.name, r.String(nodes[i], "name"));
    ES_ASSIGN_OR_RETURN(int64_t mb,
                        r.IntIn(nodes[i], "memory_mb", 0, 0, int64_t{1} << 30));
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
  const YAML::Node link = root["default_link"];
  if (link.IsDefined()) {
    if (!link.IsMap())
      return r.Error(link, "default_link", "expected {mbit_s, rtt_ms}");
    ES_ASSIGN_OR_RETURN(int64_t mbit,
                        r.IntIn(link, "mbit_s", 1000, 1, int64_t{1} << 30));
    ES_ASSIGN_OR_RETURN(int64_t rtt, r.IntIn(link, "rtt_ms", 1, 0, 1 << 20));
    if (mbit <= 0) return r.Error(link, "default_link.mbit_s", "must be > 0");
    if (rtt < 0) return r.Error(link, "default_link.rtt_ms", "must be >= 0");
    c.default_link.bytes_per_s = mbit * 1e6 / 8;
    c.default_link.rtt_ms = static_cast<double>(rtt);
  }
  ES_ASSIGN_OR_RETURN(int64_t gain, r.Int(root, "replan_min_gain_percent", 10));
  if (gain < 0 || gain > 100) {
    return r.Error(root["replan_min_gain_percent"], "replan_min_gain_percent",
                   "must be in [0, 100]");
  }
  c.replan_min_gain = gain / 100.0;
  ES_RETURN_IF_ERROR(c.Validate());
  return c;
}

absl::StatusOr<ControllerConfig> LoadControllerConfig(const std::string& path) {
  ES_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseControllerConfig(text, path);
}

}  // namespace edgesplit
