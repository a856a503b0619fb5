// The edge server's YAML config, parsed into a typed struct and validated.
//
//   name: server-a
//   listen: 127.0.0.1:50061
//   advertise: ""            # address others reach us at (default: listen)
//   advertise_peer: ""       # address other servers use (default: advertise)
//   controller: 127.0.0.1:50051
//   http_listen: ""          # /healthz, /readyz, /metrics; "" = off
//   memory_mb: 4096          # reported to the controller
//   kv_budget_mb: 1024       # KV caches of all sessions together
//   max_batch_tokens: 4096
//   max_sessions: 1024            # streams held at once (RESOURCE_EXHAUSTED
//   max_sessions_per_device: 64   # beyond), in all and per device
//   max_unsent_mb: 64             # per stream; beyond, reading pauses
//   max_pending_input_mb: 1024    # decoded inputs queued, all sessions
//   max_kept_training_tokens: 1048576  # activations kept for backwards
//   max_concurrent_streams: 2048  # HTTP/2, per connection
//   grpc_memory_mb: 0             # gRPC resource quota; 0 = its default
//   session_idle_timeout_s: 300
//   drain_deadline_s: 10
//   threads: 0               # compute threads; 0 = all cores
//   copy_weights: true
//   weights: q4_0            # f32 | q8_0 | q4_0 (GGUF blocks, quantized at
//                            # load); default: as the checkpoint stores them
//   checkpoint_dir: checkpoints   # training checkpoints ("" = none)
//   model_dir: ""            # model copies plans name (`model: {copy: }`),
//                            # fetched from peers or the controller ("" =
//                            # none: such plans fail to load here)
//   tls: {ca: certs/ca.pem, cert: certs/node-server-a.pem,
//         key: certs/node-server-a.key}   # relative to this file;
//                            # or insecure: true (loopback addresses only)
//
//   adapter_dir: adapters    # PEFT directories sessions may name
//   adapter_cache_mb: 256    # adapters in memory, per hosted stage
//   adapter_disk_mb: 0       # adapters fetched from the cluster kept on
//                            # disk (0 = no limit; least recently used go)
//   blob_dir: ""             # fetched blobs (default: adapter_dir/.blobs,
//                            # else model_dir/.blobs)
//
// "{name}" in advertise, advertise_peer, tls cert/key, checkpoint_dir,
// adapter_dir, blob_dir and model_dir stands for the server's name (its
// --name), so replicas share one file (deploy/k8s/config/server.yaml).
#ifndef EDGESPLIT_EDGE_SERVER_SERVER_CONFIG_H_
#define EDGESPLIT_EDGE_SERVER_SERVER_CONFIG_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "edge_server/admission.h"
#include "security/tls.h"

namespace edgesplit {

struct ServerConfig {
  std::string source;
  std::string name;
  std::string listen = "127.0.0.1:50061";
  std::string advertise;
  std::string advertise_peer;
  std::string controller;
  std::string http_listen;  // "" = no HTTP port.
  int64_t memory_bytes = 0;
  int64_t kv_budget_bytes = int64_t{1} << 30;
  int64_t max_batch_tokens = 4096;
  AdmissionLimits admission;
  absl::Duration session_idle_timeout = absl::Minutes(5);
  absl::Duration drain_deadline = absl::Seconds(10);
  int threads = 0;
  bool copy_weights = true;
  std::string weights;  // "" = as stored.
  std::string checkpoint_dir = "checkpoints";
  // LoRA adapters sessions may name: PEFT directories <adapter_dir>/<name>
  // ("" = none), up to adapter_cache_bytes of them kept in memory per
  // hosted stage.
  std::string adapter_dir;
  int64_t adapter_cache_bytes = int64_t{256} << 20;
  // Adapters fetched from the cluster kept on disk (their directories and
  // blobs; 0 = no limit), the least recently used evicted.
  int64_t adapter_disk_bytes = 0;
  // Blobs of adapters and model copies fetched from the cluster ("" =
  // <adapter_dir>/.blobs, or <model_dir>/.blobs without an adapter_dir).
  std::string blob_dir;
  // Model copies plans name, fetched from the cluster into
  // <model_dir>/.cluster/<model_id>/<name> ("" = none).
  std::string model_dir;
  // How often to prefetch the adapters the controller places here (0: no
  // prefetching).
  absl::Duration adapter_prefetch_interval = absl::Seconds(30);
  TlsConfig tls;

  absl::Status Validate() const;  // Errors name the file and field.
  // Replaces "{name}" by `name` in advertise, advertise_peer, tls.cert,
  // tls.key, checkpoint_dir, adapter_dir, blob_dir and model_dir: one
  // config file serves every replica of a StatefulSet (or systemd
  // template), each started with its own --name. Call after --name, before
  // Validate.
  void ExpandName();
};

absl::StatusOr<ServerConfig> ParseServerConfig(const std::string& text,
                                               const std::string& source);
absl::StatusOr<ServerConfig> LoadServerConfig(const std::string& path);

}  // namespace edgesplit

#endif  // EDGESPLIT_EDGE_SERVER_SERVER_CONFIG_H_
