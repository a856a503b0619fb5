#include "edge_server/server_config.h"

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "base/file_util.h"
#include "base/status_macros.h"
#include "base/yaml_util.h"
#include "kernels/cpu/quant_blocks.h"
#include "ops/ops_http.h"

namespace edgesplit {

void ServerConfig::ExpandName() {
  for (std::string* field :
       {&advertise, &advertise_peer, &tls.cert_file, &tls.key_file,
        &checkpoint_dir, &adapter_dir, &blob_dir, &model_dir}) {
    *field = absl::StrReplaceAll(*field, {{"{name}", name}});
  }
}

absl::Status ServerConfig::Validate() const {
  auto bad = [&](const char* field, const std::string& what) {
    return absl::InvalidArgumentError(
        absl::StrCat(source, ": field \"", field, "\": ", what));
  };
  if (name.empty()) return bad("name", "missing");
  if (name == "device") return bad("name", "\"device\" is reserved");
  if (listen.find(':') == std::string::npos) {
    return bad("listen", absl::StrCat("\"", listen, "\" is not host:port"));
  }
  if (!http_listen.empty()) {
    if (auto a = ParseListenAddress(http_listen); !a.ok()) {
      return bad("http_listen", std::string(a.status().message()));
    }
  }
  if (kv_budget_bytes <= 0) return bad("kv_budget_mb", "must be positive");
  if (max_batch_tokens <= 0) {
    return bad("max_batch_tokens", "must be positive");
  }
  if (session_idle_timeout <= absl::ZeroDuration()) {
    return bad("session_idle_timeout_s", "must be positive");
  }
  if (threads < 0) return bad("threads", "must be >= 0");
  if (absl::Status s = CheckIdentityName("name", name); !s.ok()) {
    return bad("name", std::string(s.message()));
  }
  if (!weights.empty() && !kernels::ParseWeightType(weights)) {
    return bad("weights", absl::StrCat("\"", weights, "\" is not one of ",
                                       kernels::WeightTypeList()));
  }
  auto normal = [](const std::string& dir) {
    std::string n = std::filesystem::path(dir).lexically_normal().string();
    while (n.size() > 1 && n.back() == '/') n.pop_back();
    return n;
  };
  if (!model_dir.empty() && !adapter_dir.empty() &&
      normal(model_dir) == normal(adapter_dir)) {
    // Both keep what they fetch below <dir>/.cluster/<model>/<name>.
    return bad("model_dir",
               absl::StrCat("\"", model_dir, "\" is also the adapter_dir"));
  }
  return tls.Validate(source);
}

absl::StatusOr<ServerConfig> ParseServerConfig(const std::string& text,
                                               const std::string& source) {
  YamlReader r(source);
  ES_ASSIGN_OR_RETURN(YAML::Node root, r.Parse(text));
  ServerConfig c;
  c.source = source;
  ES_ASSIGN_OR_RETURN(c.name, r.String(root, "name", false));
  ES_ASSIGN_OR_RETURN(std::string listen, r.String(root, "listen", false));
  if (!listen.empty()) c.listen = listen;
  ES_ASSIGN_OR_RETURN(c.advertise, r.String(root, "advertise", false));
  ES_ASSIGN_OR_RETURN(c.advertise_peer,
                      r.String(root, "advertise_peer", false));
  ES_ASSIGN_OR_RETURN(c.controller, r.String(root, "controller", false));
  ES_ASSIGN_OR_RETURN(c.http_listen, r.String(root, "http_listen", false));
  ES_ASSIGN_OR_RETURN(int64_t memory_mb,
                      r.IntIn(root, "memory_mb", 0, 0, int64_t{1} << 30));
  c.memory_bytes = memory_mb << 20;
  ES_ASSIGN_OR_RETURN(int64_t kv_mb,
                      r.IntIn(root, "kv_budget_mb", 1024, 1, int64_t{1} << 30));
  c.kv_budget_bytes = kv_mb << 20;
  ES_ASSIGN_OR_RETURN(c.max_batch_tokens,
                      r.IntIn(root, "max_batch_tokens", 4096, 1, 1 << 24));
  ES_ASSIGN_OR_RETURN(int64_t max_sessions,
                      r.IntIn(root, "max_sessions", 1024, 1, 1 << 20));
  c.admission.max_sessions = static_cast<int>(max_sessions);
  ES_ASSIGN_OR_RETURN(int64_t per_device,
                      r.IntIn(root, "max_sessions_per_device", 64, 1, 1 << 20));
  c.admission.max_sessions_per_device = static_cast<int>(per_device);
  ES_ASSIGN_OR_RETURN(int64_t unsent_mb,
                      r.IntIn(root, "max_unsent_mb", 64, 1, 1 << 20));
  c.admission.max_unsent_bytes = unsent_mb << 20;
  ES_ASSIGN_OR_RETURN(int64_t input_mb,
                      r.IntIn(root, "max_pending_input_mb", 1024, 1, 1 << 24));
  c.admission.max_pending_input_bytes = input_mb << 20;
  ES_ASSIGN_OR_RETURN(
      c.admission.max_kept_training_tokens,
      r.IntIn(root, "max_kept_training_tokens", 1 << 20, 1, int64_t{1} << 40));
  ES_ASSIGN_OR_RETURN(int64_t streams, r.IntIn(root, "max_concurrent_streams",
                                               2048, 1, 1 << 20));
  c.admission.max_concurrent_streams = static_cast<int>(streams);
  ES_ASSIGN_OR_RETURN(int64_t grpc_mb,
                      r.IntIn(root, "grpc_memory_mb", 0, 0, 1 << 24));
  c.admission.grpc_memory_bytes = grpc_mb << 20;
  ES_ASSIGN_OR_RETURN(int64_t idle, r.IntIn(root, "session_idle_timeout_s", 300,
                                            1, 86400 * 30));
  c.session_idle_timeout = absl::Seconds(idle);
  ES_ASSIGN_OR_RETURN(int64_t drain,
                      r.IntIn(root, "drain_deadline_s", 10, 0, 3600));
  c.drain_deadline = absl::Seconds(drain);
  ES_ASSIGN_OR_RETURN(int64_t threads, r.IntIn(root, "threads", 0, 0, 4096));
  c.threads = static_cast<int>(threads);
  ES_ASSIGN_OR_RETURN(c.copy_weights, r.Bool(root, "copy_weights", true));
  ES_ASSIGN_OR_RETURN(c.tls, ParseTlsConfig(r, root));
  if (root["weights"]) {
    ES_ASSIGN_OR_RETURN(c.weights, r.String(root, "weights", false));
  }
  if (root["adapter_dir"]) {
    ES_ASSIGN_OR_RETURN(c.adapter_dir, r.String(root, "adapter_dir", false));
  }
  if (root["blob_dir"]) {
    ES_ASSIGN_OR_RETURN(c.blob_dir, r.String(root, "blob_dir", false));
  }
  ES_ASSIGN_OR_RETURN(int64_t adapter_mb, r.IntIn(root, "adapter_cache_mb", 256,
                                                  1, int64_t{1} << 30));
  c.adapter_cache_bytes = adapter_mb << 20;
  ES_ASSIGN_OR_RETURN(int64_t disk_mb,
                      r.IntIn(root, "adapter_disk_mb", 0, 0, int64_t{1} << 30));
  c.adapter_disk_bytes = disk_mb << 20;
  ES_ASSIGN_OR_RETURN(
      int64_t prefetch_s,
      r.IntIn(root, "adapter_prefetch_interval_s", 30, 0, 86400));
  c.adapter_prefetch_interval = absl::Seconds(prefetch_s);
  if (root["model_dir"]) {
    ES_ASSIGN_OR_RETURN(c.model_dir, r.String(root, "model_dir", false));
  }
  if (root["checkpoint_dir"]) {
    ES_ASSIGN_OR_RETURN(c.checkpoint_dir,
                        r.String(root, "checkpoint_dir", false));
  }
  return c;
}

absl::StatusOr<ServerConfig> LoadServerConfig(const std::string& path) {
  ES_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseServerConfig(text, path);
}

}  // namespace edgesplit
