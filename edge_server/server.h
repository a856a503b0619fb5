// An edge server: hosts stages, serves StageService, expires idle sessions,
// and shuts down in phases (stop accepting, drain with a deadline, force).
#ifndef EDGESPLIT_EDGE_SERVER_SERVER_H_
#define EDGESPLIT_EDGE_SERVER_SERVER_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "delivery/blob_service.h"
#include "edge_server/adapter_fetcher.h"
#include "edge_server/cluster_delivery.h"
#include "edge_server/controller_link.h"
#include "edge_server/grant_gate.h"
#include "edge_server/grpc_next_hop.h"
#include "edge_server/model_fetcher.h"
#include "edge_server/server_metrics.h"
#include "edge_server/stage_host.h"
#include "edge_server/stage_service.h"
#include "edge_server/training_job.h"
#include "grpcpp/grpcpp.h"
#include "ops/ops_http.h"
#include "security/tls.h"

namespace edgesplit {

struct EdgeServerOptions {
  StageHostOptions host;
  std::string listen = "127.0.0.1:0";  // Port 0 picks a free port.
  absl::Duration session_idle_timeout = absl::Minutes(5);
  wire::TensorLimits limits;
  AdmissionLimits admission;
  // The controller to register with and take plans from; empty: none
  // (stages are loaded through host()).
  std::string controller;
  std::string advertise;  // Default: the bound listen address.
  // Where other servers reach this one, if not `advertise` (a backbone
  // network beside the device-facing one).
  std::string advertise_peer;
  int64_t memory_bytes = 0;  // Reported to the controller.
  // The operators' HTTP port (/healthz, /readyz, /metrics:
  // ops/ops_http.h); empty: none. Port 0 picks a free one (http_port()).
  std::string http_listen;
  // Measure compute and links when the controller asks (see
  // ControllerLink).
  bool profile = true;
  // Training sessions' checkpoints (one directory per job below it); ""
  // keeps none.
  std::string checkpoint_dir;
  // Blobs of adapters and model copies fetched from the cluster (when
  // empty: host.adapters.dir's ".blobs", else model_dir's); with a
  // controller and an adapter directory, a session's adapter missing here
  // is fetched from peers or the controller and served to peers in turn
  // (BlobService on this server's port).
  std::string blob_dir;
  // With a controller: model copies plans name (Plan.model_copy) are
  // fetched from peers or the controller into <model_dir>/.cluster/
  // <model_id>/<name> and served to peers in turn (model_fetcher.h); ""
  // fetches none (such plans fail to load here).
  std::string model_dir;
  // The adapters fetched from the cluster kept on disk within this many
  // bytes (their directories and blobs), least recently used evicted
  // (adapter_disk.h); 0: no limit.
  int64_t adapter_disk_bytes = 0;
  // How often the server asks the controller which adapters it should
  // cache (its adapter placement) and prefetches those it lacks; zero:
  // never (adapters arrive with their first session only).
  absl::Duration adapter_prefetch_interval = absl::Seconds(30);
  // Mutual TLS (or loopback-only plaintext) of the port and of every
  // channel this server opens. Required.
  std::shared_ptr<const TransportSecurity> security;
  // SessionEnv::request_tap (tests).
  std::function<void(const v1::StageRequest&)> request_tap;
};
// (Emulated slow servers: host.compute_slowdown, or
// host()->SetComputeSlowdown() while running.)

// Thread-safe.
class EdgeServer {
 public:
  static absl::StatusOr<std::unique_ptr<EdgeServer>> Start(
      EdgeServerOptions options);
  ~EdgeServer();  // Shutdown(0) if still running.

  StageHost* host() { return host_.get(); }
  // What this server fetched from the cluster; null without a controller
  // or an adapter directory (adapters), a model directory (model copies).
  const ClusterAdapterSource* adapter_source() const { return adapters_.get(); }
  const ClusterModelSource* model_source() const { return models_.get(); }
  // "127.0.0.1:<port>" actually bound.
  const std::string& address() const { return address_; }
  const std::string& node() const { return options_.host.node; }
  int open_sessions() const { return service_->open_sessions(); }
  // Usage against the admission limits (see admission.h).
  const StageServiceImpl& service() const { return *service_; }
  int64_t pending_input_bytes() const { return pending_inputs_->used(); }
  int64_t kept_training_tokens() const { return kept_tokens_->used(); }
  const TrainingJobs& jobs() const { return *jobs_; }
  const TransportSecurity& security() const { return *options_.security; }
  // This server's metrics (what /metrics serves).
  const metrics::Registry& metrics() const { return *registry_; }
  // Plan updates applied so far (from any controller incarnation).
  // (Counted here, not read from link_: scrapes of /metrics call it while
  // Start sets link_ and Shutdown resets it.)
  uint64_t plans_applied() const { return plans_applied_.load(); }
  // The HTTP port bound (0 without http_listen).
  int http_port() const { return http_ == nullptr ? 0 : http_->port(); }
  // Whether it takes new sessions: its last plan update loaded every stage
  // (a server without a controller: from the start; its stages come
  // through host()) and it is not draining. As grpc.health.v1 and /readyz
  // say.
  bool ready() const { return ready_.load(); }
  // Blocks until the controller's plans were applied once (or `timeout`).
  bool WaitForPlans(absl::Duration timeout) {
    return link_ == nullptr || link_->WaitForPlans(timeout);
  }

  // Phase 1: refuse new sessions. Phase 2: let open sessions finish until
  // `drain`. Phase 3: end the rest (UNAVAILABLE) and stop. Returns how many
  // sessions had to be cut off.
  int Shutdown(absl::Duration drain);

 private:
  explicit EdgeServer(EdgeServerOptions options)
      : options_(std::move(options)) {}
  // With a controller and an adapter or model directory: the sources that
  // fetch adapters and model copies from the cluster, and the BlobService
  // serving what they hold.
  absl::Status StartDelivery();
  // The readiness both health endpoints report; never true again once
  // Shutdown began.
  void SetReady(bool ready);

  EdgeServerOptions options_;
  // Before everything that reports into them.
  std::unique_ptr<metrics::Registry> registry_ =
      std::make_unique<metrics::Registry>();
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<ClusterDelivery> delivery_;       // Outlives the two below.
  std::unique_ptr<ClusterAdapterSource> adapters_;  // Outlives host_.
  std::unique_ptr<ClusterModelSource> models_;      // Outlives host_.
  std::unique_ptr<BlobServiceImpl> blobs_;
  std::unique_ptr<StageHost> host_;
  std::unique_ptr<GrantGate> grants_;  // Outlives service_'s sessions.
  std::unique_ptr<GrpcNextHopFactory> next_hops_;
  std::unique_ptr<TrainingJobs> jobs_;  // Outlives service_'s sessions.
  std::shared_ptr<UsageBudget> pending_inputs_;
  std::shared_ptr<UsageBudget> kept_tokens_;
  std::unique_ptr<StageServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<ControllerLink> link_;
  std::string address_;
  absl::Notification stop_;
  std::thread reaper_;
  std::thread prefetcher_;  // With adapter delivery and an interval.
  // Set first thing in Shutdown: the prefetcher stops between adapters
  // rather than fetching through the drain.
  absl::Notification prefetch_stop_;
  std::atomic<bool> shut_down_{false};
  // One writer at a time, so gRPC's status and ready_ agree and a plan
  // landing during Shutdown cannot make the server ready again.
  absl::Mutex ready_mu_;
  bool draining_ ABSL_GUARDED_BY(ready_mu_) = false;
  std::atomic<bool> ready_{false};
  std::atomic<uint64_t> plans_applied_{0};
  std::unique_ptr<OpsHttp> http_;  // Reads ready_: stopped before it goes.
};

}  // namespace edgesplit

#endif  // EDGESPLIT_EDGE_SERVER_SERVER_H_
