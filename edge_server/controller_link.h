// An edge server's link to the controller: registers the node, sends
// heartbeats, and applies the plans WatchPlan pushes to the stage host.
// One background thread using the synchronous client (a handful of calls
// per second); every call carries a deadline, and a lost controller is
// retried with backoff while the server keeps serving its current stages.
#ifndef EDGESPLIT_EDGE_SERVER_CONTROLLER_LINK_H_
#define EDGESPLIT_EDGE_SERVER_CONTROLLER_LINK_H_

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "edge_server/grant_gate.h"
#include "edge_server/stage_host.h"
#include "edgesplit/v1/controller.grpc.pb.h"
#include "edgesplit/v1/stage.grpc.pb.h"
#include "proto/probe.h"
#include "proto/stage_stream.h"

namespace edgesplit {

struct ControllerLinkOptions {
  std::string controller;  // host:port
  std::string node;
  std::string advertise;       // host:port others reach this server at
  std::string advertise_peer;  // For other servers, if not `advertise`.
  int64_t memory_bytes = 0;
  int64_t kv_budget_bytes = 0;
  absl::Duration rpc_timeout = absl::Seconds(5);
  // Profiling on the controller's request: compute of each named model
  // (one block timed) and links to the named peers (Probe RPCs).
  bool profile = true;
  bool copy_weights = true;
  std::optional<kernels::WeightType> weights;  // Profiled as run.
  // Dials the controller and the peers it asks to probe.
  std::shared_ptr<const TransportSecurity> security;
  // Gets the controller's route-grant key with every plan update.
  GrantGate* grants = nullptr;
  // Runs (on the link's thread) after each plan update was applied, with
  // ApplyPlans' status (not OK: some stage failed to load).
  std::function<void(const absl::Status&)> on_plans_applied;
};

class ControllerLink {
 public:
  // `host` must outlive the link; `open_sessions` reports the load.
  // `options.security` must allow dialling `options.controller` (check
  // with ChannelCredentials first: a refusal here aborts).
  ControllerLink(ControllerLinkOptions options, StageHost* host,
                 std::function<int()> open_sessions);
  ~ControllerLink();  // Stops the thread.

  // Blocks until the first plan update was applied (or `timeout`).
  bool WaitForPlans(absl::Duration timeout);
  // Tells the controller this server is shutting down, so it routes no new
  // session here (best effort, one short call; heartbeats stopping would
  // tell it too, later).
  absl::Status Drain();
  uint64_t plans_applied() const;

 private:
  void Run();
  absl::Status RegisterOnce();
  // Watches plans until the stream ends; heartbeats from a helper thread.
  absl::Status WatchOnce();
  // The profiler thread: measures what the controller's latest profile
  // request asks for (models already measured are reused) and queues the
  // result for the next heartbeat. Measuring takes seconds (weights load,
  // probes time out), so it never runs on the heartbeat thread.
  void ProfileLoop();
  void Profile(const v1::ProfileRequest& request);
  // Compares each stage's recent lone decode steps with what they took
  // when its baseline was set; a stage slower (or faster) by more than a
  // quarter re-reports the model's compute, scaled. Heartbeat thread only.
  void TrackLiveCompute();
  // Hands a profile request to the profiler thread unless `version` was
  // already measured or is being measured.
  void RequestProfile(const v1::ProfileRequest& request, uint64_t version);

  const ControllerLinkOptions options_;
  StageHost* const host_;
  std::function<int()> open_sessions_;
  std::unique_ptr<v1::ControllerService::Stub> stub_;
  absl::Notification stop_;
  mutable absl::Mutex mu_;
  uint64_t applied_ ABSL_GUARDED_BY(mu_) = 0;
  // Until registration says otherwise: beat soon.
  absl::Duration heartbeat_ ABSL_GUARDED_BY(mu_) = absl::Milliseconds(100);
  grpc::ClientContext* watch_ctx_ ABSL_GUARDED_BY(mu_) = nullptr;

  // Profiles: written by the profiler and heartbeat threads.
  absl::Mutex profile_mu_;
  v1::ProfileRequest pending_request_ ABSL_GUARDED_BY(profile_mu_);
  uint64_t pending_version_ ABSL_GUARDED_BY(profile_mu_) = 0;
  uint64_t profiled_version_ ABSL_GUARDED_BY(profile_mu_) = 0;
  std::map<std::string, v1::ComputeProfile> compute_
      ABSL_GUARDED_BY(profile_mu_);  // By ComputeKey (proto/protocol.h).
  std::vector<v1::LinkProfile> links_ ABSL_GUARDED_BY(profile_mu_);
  // Reports produced and acknowledged: a beat carries compute_ and links_
  // while report_ > acked_.
  uint64_t report_ ABSL_GUARDED_BY(profile_mu_) = 0;
  uint64_t acked_ ABSL_GUARDED_BY(profile_mu_) = 0;
  struct Window {
    int64_t forwards = 0;
    double block_ms = 0;  // Summed ms per block-equivalent.
  };
  // Per stage ("model/first/last/head"): totals already counted, the
  // current window, and the baseline ms per block-equivalent.
  std::map<std::string, std::pair<int64_t, double>> live_seen_
      ABSL_GUARDED_BY(profile_mu_);
  std::map<std::string, Window> live_window_ ABSL_GUARDED_BY(profile_mu_);
  std::map<std::string, double> live_baseline_ ABSL_GUARDED_BY(profile_mu_);
  // Stubs to the peers probed; big enough for the largest probe.
  StageStubCache peers_;

  std::thread profiler_thread_;
  std::thread thread_;
  std::thread heartbeat_thread_;
};

}  // namespace edgesplit

#endif  // EDGESPLIT_EDGE_SERVER_CONTROLLER_LINK_H_
