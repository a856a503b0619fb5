// The controller's service logic (no gRPC): the cluster's nodes and their
// heartbeats, the split plans loaded from YAML, and session routing.
// controller_service.h exposes it over gRPC.
#ifndef EDGESPLIT_CONTROLLER_CONTROLLER_H_
#define EDGESPLIT_CONTROLLER_CONTROLLER_H_

#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "base/yaml_util.h"
#include "controller/adapter_placement.h"
#include "controller/auto_plan.h"
#include "controller/controller_metrics.h"
#include "controller/fed_average.h"
#include "controller/plan.h"
#include "edgesplit/v1/controller.pb.h"
#include "security/grant.h"
#include "security/tls.h"

namespace edgesplit {

// Time source; tests substitute a manual clock.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual absl::Time Now() = 0;
};
Clock* RealClock();

// Open-session records the controller keeps at most (about 100 bytes
// each); opens beyond it are refused RESOURCE_EXHAUSTED.
inline constexpr size_t kMaxSessionRecords = size_t{1} << 20;

// What one device may use (the controller's `devices:` list).
struct DeviceAccess {
  std::string name;
  std::set<std::string> models;    // "*": every model.
  std::set<std::string> adapters;  // "*": every adapter ("" = base model).
};

struct ControllerConfig {
  std::string source;  // The config file, for errors.
  std::string listen = "127.0.0.1:50051";
  std::string
      http_listen;  // /healthz, /readyz, /metrics (plain HTTP); "" = off.
  absl::Duration heartbeat_interval = absl::Seconds(1);
  int dead_after_missed = 3;
  std::vector<NodeConfig> nodes;
  std::vector<std::string> plan_files;  // Resolved paths.
  // Assumed for links nobody measured yet.
  DefaultLink default_link;
  // A running automatic plan is replaced only by one predicted at least
  // this much better (a fraction), so measurement noise doesn't move
  // sessions back and forth; infeasible plans are always replaced.
  double replan_min_gain = 0.1;
  // Mutual TLS of the controller's port (security/tls.h).
  TlsConfig tls;
  // Ed25519 key signing route grants (security/grant.h); required with
  // TLS. Grants expire after `grant_ttl` (for opening, not for sessions
  // already open); routes longer than `max_route_hops` are refused.
  std::string grant_key_file;
  absl::Duration grant_ttl = absl::Seconds(60);
  int max_route_hops = kDefaultMaxRouteHops;
  // Each device's reports of unreachable nodes (OpenSession.suspects)
  // count at most this often per minute; more are ignored, so one device
  // cannot keep healthy nodes out of every plan.
  int suspect_reports_per_minute = 6;
  // Which models and adapters each device may use. Empty (no `devices:`
  // section): every device may use every model; otherwise a device not
  // listed may open no session.
  std::vector<DeviceAccess> devices;
  // Ids of device tokens (security/token.h) no longer accepted.
  std::set<std::string> revoked_tokens;
  // After (re)starting, plan updates tell servers to retire nothing for
  // this long: automatic plans need the servers' profiles first, and an
  // update without them would unload every stage under running sessions.
  absl::Duration startup_grace = absl::Seconds(10);
  // Where the controller keeps what must survive a restart: training jobs'
  // owners (jobs.json). Empty: memory only, so after a restart any device
  // may claim a job id first.
  std::string state_dir;
  // Session records (for counting and CloseSession) older than this are
  // dropped: a device that crashed never closes its sessions.
  absl::Duration session_record_ttl = absl::Hours(24);
  // Federated averaging: adapters held by rounds still waiting for devices,
  // all rounds together (beyond: RESOURCE_EXHAUSTED), and how long a round
  // waits for its slowest device.
  int64_t fed_memory_bytes = int64_t{1} << 30;
  absl::Duration fed_round_timeout = absl::Minutes(10);
  // Which devices' adapters each round averages (fed_average.h).
  FedSelection fed_selection;
  // Which adapters each server caches (controller/adapter_placement.h).
  AdapterPlacementConfig adapter_placement;

  absl::Status Validate() const;
};

// Reads the controller's YAML config:
//   listen: 127.0.0.1:50051
//   http_listen: ""                # /healthz, /readyz, /metrics; "" = off
//   heartbeat_interval_ms: 1000
//   dead_after_missed: 3
//   nodes: [{name: server-a, memory_mb: 2048}, ...]
//   plans: [plans/stories-2way.yaml, ...]   # relative to this file
//   default_link: {mbit_s: 1000, rtt_ms: 1} # until probes measure links
//   replan_min_gain_percent: 10             # hysteresis of re-planning
//   tls: {ca: certs/ca.pem, cert: certs/controller.pem,
//         key: certs/controller.key}        # or insecure: true (loopback)
//   grant_key: certs/grant.key              # signs route grants
//   grant_ttl_s: 60
//   max_route_hops: 16
//   suspect_reports_per_minute: 6           # per device
//   devices:                                # optional; absent: all may
//     - {name: phone-1, models: [stories260K], adapters: ["*"]}
//   revoked_tokens: [3f2a...]               # device tokens refused
//   startup_grace_s: 10                     # servers retire no stage yet
//   state_dir: /var/lib/edgesplit/controller  # jobs' owners, kept
//   session_record_ttl_s: 86400             # unclosed sessions forgotten
//   fed_memory_mb: 1024                     # adapters waiting in rounds
//   fed_round_timeout_s: 600                # a round waits this long
//   fed_selection: {per_round: 2}           # average the 2 least noisy /
//                                           # fastest devices (0: all)
//   adapter_placement: {server_storage_mb: 512}  # adapter_placement.h
absl::StatusOr<ControllerConfig> LoadControllerConfig(const std::string& path);
// The `devices:` and `revoked_tokens:` sections (admission.cc); errors name the
// file, line, field.
absl::Status ParseDeviceAccess(const YamlReader& r, const YAML::Node& root,
                               ControllerConfig* config);
absl::StatusOr<ControllerConfig> ParseControllerConfig(
    const std::string& text, const std::string& source);

// Thread-safe.
class Controller {
 public:
  Controller(ControllerConfig config, Clock* clock);
  const ControllerConfig& config() const { return config_; }
  // The controller's metrics (what its /metrics serves); the daemon adds
  // its own (TLS, process) to the same registry.
  metrics::Registry* metrics_registry() const { return registry_.get(); }

  // (Re)reads every plan file. Valid plans replace the running ones of
  // their model; an invalid file is reported (naming file, line, field)
  // and its model keeps its running plan.
  v1::ReloadPlansResponse ReloadPlans();

  absl::StatusOr<v1::RegisterNodeResponse> RegisterNode(
      const v1::RegisterNodeRequest& request);
  absl::StatusOr<v1::HeartbeatResponse> Heartbeat(
      const v1::HeartbeatRequest& request);
  // Plans of `model_id`, or of every model when empty.
  absl::StatusOr<v1::GetPlanResponse> GetPlan(const std::string& model_id);
  // Every plan assigning blocks to `node`.
  v1::PlanUpdate PlansFor(const std::string& node);
  absl::StatusOr<v1::OpenSessionResponse> OpenSession(
      const v1::OpenSessionRequest& request);
  absl::Status CloseSession(const std::string& session_id);
  // The usable ones of `nodes` (not `from`) with their peer addresses,
  // nearest to `from` first: by the round trip `from` measured to each,
  // unmeasured ones last (by name). Where a server fetches blobs from.
  std::vector<std::pair<std::string, std::string>> PeersNearestTo(
      const std::string& from, const std::vector<std::string>& nodes) const;
  // OK when the `devices:` section lets request.device() use its model
  // and adapter (or there is no such section).
  absl::Status AuthorizeDevice(const v1::OpenSessionRequest& request) const;
  // OK when `device` is a member of training job `job_id` (its creator or
  // one it named); PermissionDenied otherwise, NotFound for no such job.
  absl::Status CheckJobMember(const std::string& job_id,
                              const std::string& device) const;
  // With the device's profile, when it sends one.
  absl::Status CloseSession(const v1::CloseSessionRequest& request);
  v1::ClusterStatus ClusterStatus();
  // Takes `node` out of routing now (re-planning around it); NotFound if
  // it never registered.
  absl::Status Drain(const std::string& node);

  // Loads config.grant_key_file (if set): from then on every OpenSession
  // answer carries a signed grant and plan updates carry the public key.
  // Call once, before serving.
  absl::Status LoadGrantKey();
  // Reads the training jobs kept in config.state_dir (if any). Call once,
  // before serving; errors name the file and field.
  absl::Status LoadState();
  // The grant key's public half ("" without one): it also checks device
  // tokens.
  std::string grant_public_key() const;
  // Unauthenticated when `peer` came with a revoked device token.
  absl::Status CheckToken(const Peer& peer) const;

  uint64_t plan_version() const;
  int open_sessions() const;
  // Routed sessions not yet closed, by model, and the training jobs with
  // their members (the status page).
  struct LiveSummary {
    std::map<std::string, int> sessions_by_model;
    struct Job {
      std::string id, model_id;
      std::vector<std::string> members;
    };
    std::vector<Job> jobs;
  };
  LiveSummary Live() const;
  // Calls `on_change` after every plan change (from the changing thread;
  // must not block). Returns an id for Unsubscribe.
  int Subscribe(std::function<void()> on_change);
  void Unsubscribe(int id);
  // Sends every watcher the plans again, changed or not: servers whose
  // stages failed to load (a model copy not registered yet) try again.
  void NotifyWatchers();

 private:
  struct Node {
    std::string address;
    std::string peer_address;  // Empty: `address`.
    absl::Time last_seen;
    uint32_t open_sessions = 0;
    int64_t kv_used_bytes = 0;
    int64_t memory_bytes = 0;
    int64_t kv_budget_bytes = 0;
    std::map<std::string, v1::ComputeProfile> compute;  // By model id.
    std::vector<v1::LinkProfile> links;
    // A device could not reach it at this time: not planned on until it
    // beats again.
    absl::Time suspected_at = absl::InfinitePast();
    // Shutting down (Drain): routed to no more until it registers again.
    bool draining = false;
  };
  struct AutoSpec {
    PlanConfig spec;
    ModelConfig model;
  };
  // OK when `node` is registered and has beaten recently; else UNAVAILABLE
  // naming it.
  absl::Status CheckAlive(const std::string& node) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // OpenSession less the counting.
  absl::StatusOr<v1::OpenSessionResponse> OpenSessionCounted(
      const v1::OpenSessionRequest& request);
  absl::StatusOr<v1::OpenSessionResponse> OpenSessionLocked(
      const v1::OpenSessionRequest& request) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckProfiles(
      const google::protobuf::RepeatedPtrField<v1::ComputeProfile>& compute,
      const google::protobuf::RepeatedPtrField<v1::LinkProfile>& links) const;
  void KeepPlannedModels(
      const google::protobuf::RepeatedPtrField<v1::ComputeProfile>& compute,
      std::map<std::string, v1::ComputeProfile>* out) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckDeviceProfile(const v1::DeviceProfile& profile) const;
  // Stores a device's report; true when planning inputs changed.
  bool ApplyDeviceProfileLocked(const v1::DeviceProfile& profile)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool UsableLocked(const std::string& node) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::set<std::string> UsableSetLocked() const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Re-plans every automatic plan from the current profiles; true when a
  // plan changed (the caller notifies watchers after unlocking).
  bool ReplanLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Re-plans when nodes became usable or unusable since the last plan.
  bool ReplanIfMembershipChangedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::ProfileRequest ProfileRequestLocked(const std::string& node,
                                          uint64_t* version) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  v1::Plan ToProtoLocked(const PlanConfig& plan) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static v1::Plan ToProto(const PlanConfig& plan, uint64_t version);

  // Signs the grant of `response` (admission.cc).
  absl::Status SignGrant(const v1::OpenSessionRequest& request,
                         v1::OpenSessionResponse* response) const;
  // Whether the request's device may use its model and adapter.
  // Creates the request's training job or checks the device belongs to it.
  absl::Status AdmitToJobLocked(const v1::OpenSessionRequest& request)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether `device` may report suspects now (and counts it if so).
  bool CountSuspectReportLocked(const std::string& device)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes jobs_ to state_dir/jobs.json (atomically, durably).
  absl::Status SaveJobsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const ControllerConfig config_;
  Clock* const clock_;
  const std::unique_ptr<metrics::Registry> registry_ =
      std::make_unique<metrics::Registry>();
  const ControllerMetrics metrics_{registry_.get()};
  // Set once by LoadGrantKey() before serving; immutable after.
  std::unique_ptr<GrantSigner> signer_;
  std::map<std::string, NodeConfig> cluster_;  // From the config.

  mutable absl::Mutex mu_;
  std::map<std::string, Node> nodes_ ABSL_GUARDED_BY(mu_);
  // When each device's last suspect reports counted (the last minute).
  std::map<std::string, std::deque<absl::Time>> suspect_reports_
      ABSL_GUARDED_BY(mu_);
  std::map<std::string, PlanConfig> plans_ ABSL_GUARDED_BY(mu_);
  uint64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  // Open sessions: id -> model and when the route was given. Devices that
  // vanish never close theirs, so records older than session_record_ttl
  // are forgotten (swept at most once a minute, on opens).
  struct SessionRecord {
    std::string model_id;
    absl::Time opened;
  };
  std::map<std::string, SessionRecord> sessions_ ABSL_GUARDED_BY(mu_);
  absl::Time last_sweep_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // When the startup grace ends; until then (settled_ false) plan updates
  // carry keep_unlisted. Heartbeats notice its end.
  const absl::Time grace_ends_;
  bool settled_ ABSL_GUARDED_BY(mu_) = false;
  // Training jobs by id: their model and the devices that may use them. A
  // job belongs to the device that first opened it and the members it
  // named; nobody else gets a grant for it (every hop checks grants), nor
  // joins its averaging rounds.
  struct Job {
    std::string model_id;
    std::set<std::string> members;
  };
  std::map<std::string, Job> jobs_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, AutoSpec> specs_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, planner::PlanResult> predictions_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> planner_errors_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> planned_with_ ABSL_GUARDED_BY(mu_);
  NodeView device_ ABSL_GUARDED_BY(mu_);  // The last device report.
  std::map<std::string, v1::ComputeProfile> device_compute_
      ABSL_GUARDED_BY(mu_);
  std::mt19937_64 rng_ ABSL_GUARDED_BY(mu_){std::random_device{}()};

  absl::Mutex watch_mu_;
  std::map<int, std::function<void()>> watchers_ ABSL_GUARDED_BY(watch_mu_);
  int next_watch_id_ ABSL_GUARDED_BY(watch_mu_) = 0;
};

}  // namespace edgesplit

#endif  // EDGESPLIT_CONTROLLER_CONTROLLER_H_
