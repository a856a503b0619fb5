#include "edge_server/controller_link.h"

#include <cmath>
#include <fstream>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/grpcpp.h"
#include "ops/log.h"
#include "proto/grpc_status.h"
#include "proto/probe.h"
#include "proto/protocol.h"
#include "runtime/profiler.h"

namespace edgesplit {
namespace {

// MemAvailable from /proc/meminfo (free memory plus reclaimable caches);
// 0 when it cannot be read.
int64_t AvailableMemoryBytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  int64_t kb = 0;
  std::string unit;
  while (meminfo >> key >> kb >> unit) {
    if (key == "MemAvailable:") return kb * 1024;
  }
  return 0;
}

}  // namespace

ControllerLink::ControllerLink(ControllerLinkOptions options, StageHost* host,
                               std::function<int()> open_sessions)
    : options_(std::move(options)),
      host_(host),
      open_sessions_(std::move(open_sessions)),
      peers_(static_cast<int>(kMaxProbeResponseBytes) + (1 << 20),
             options_.security) {
  auto channel = options_.security->Dial(
      options_.controller, ControllerIdentity(options_.security->cluster()));
  if (!channel.ok()) {
    log::Error(absl::StrCat("ControllerLink: ", channel.status().message()));
    std::abort();  // The caller's precondition.
  }
  stub_ = v1::ControllerService::NewStub(*channel);
  thread_ = std::thread([this] { Run(); });
  if (options_.profile)
    profiler_thread_ = std::thread([this] { ProfileLoop(); });
  heartbeat_thread_ = std::thread([this] {
    for (;;) {
      absl::Duration every;
      {
        absl::MutexLock lock(&mu_);
        every = heartbeat_;
      }
      // Always a full interval between beats: a failing controller is not
      // hammered, whatever is pending.
      if (stop_.WaitForNotificationWithTimeout(every)) return;
      if (options_.profile) TrackLiveCompute();
      grpc::ClientContext ctx;
      ctx.set_deadline(ToChrono(absl::Now() + options_.rpc_timeout));
      v1::HeartbeatRequest req;
      req.set_node(options_.node);
      req.set_open_sessions(open_sessions_ ? open_sessions_() : 0);
      req.set_kv_used_bytes(host_->kv_budget()->used());
      uint64_t sent = 0;
      {
        absl::MutexLock lock(&profile_mu_);
        if (report_ > acked_) {
          sent = report_;
          for (const auto& [id, c] : compute_) *req.add_compute() = c;
          for (const auto& l : links_) *req.add_links() = l;
        }
      }
      v1::HeartbeatResponse resp;
      grpc::Status s = stub_->Heartbeat(&ctx, req, &resp);
      if (s.ok() || s.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
        // Delivered, or refused for good (the controller said why): either
        // way, don't send the same report again.
        absl::MutexLock lock(&profile_mu_);
        acked_ = std::max(acked_, sent);
      }
      if (s.error_code() == grpc::StatusCode::INVALID_ARGUMENT) {
        log::Warning(
            absl::StrCat("controller refused the profile: ", s.error_message()),
            {{"node", options_.node}});
      }
      if (s.error_code() == grpc::StatusCode::NOT_FOUND) {
        // The controller restarted and forgot us: register again.
        (void)RegisterOnce();
      } else if (s.ok() && options_.profile) {
        RequestProfile(resp.profile(), resp.profile_version());
      }
    }
  });
}

void ControllerLink::RequestProfile(const v1::ProfileRequest& request,
                                    uint64_t version) {
  absl::MutexLock lock(&profile_mu_);
  if (version == 0 || version == pending_version_ ||
      version == profiled_version_) {
    return;
  }
  pending_request_ = request;
  pending_version_ = version;
}

void ControllerLink::ProfileLoop() {
  for (;;) {
    v1::ProfileRequest request;
    uint64_t version;
    {
      absl::MutexLock lock(&profile_mu_);
      auto wanted = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(profile_mu_) {
        return stop_.HasBeenNotified() || pending_version_ != profiled_version_;
      };
      while (!wanted()) {
        profile_mu_.AwaitWithTimeout(absl::Condition(&wanted),
                                     absl::Milliseconds(100));
      }
      if (stop_.HasBeenNotified()) return;
      request = pending_request_;
      version = pending_version_;
    }
    Profile(request);
    absl::MutexLock lock(&profile_mu_);
    profiled_version_ = version;
  }
}

ControllerLink::~ControllerLink() {
  stop_.Notify();
  {
    absl::MutexLock lock(&mu_);
    if (watch_ctx_ != nullptr) watch_ctx_->TryCancel();
  }
  thread_.join();
  heartbeat_thread_.join();
  if (profiler_thread_.joinable()) profiler_thread_.join();
}

absl::Status ControllerLink::Drain() {
  grpc::ClientContext ctx;
  ctx.set_deadline(
      ToChrono(absl::Now() + std::min(options_.rpc_timeout, absl::Seconds(2))));
  v1::DrainRequest req;
  req.set_node(options_.node);
  v1::DrainResponse resp;
  return FromGrpcStatus(stub_->Drain(&ctx, req, &resp),
                        "controller " + options_.controller);
}

absl::Status ControllerLink::RegisterOnce() {
  grpc::ClientContext ctx;
  ctx.set_deadline(ToChrono(absl::Now() + options_.rpc_timeout));
  v1::RegisterNodeRequest req;
  req.set_node(options_.node);
  req.set_address(options_.advertise);
  req.set_peer_address(options_.advertise_peer);
  // Not configured: report what the machine has free now (the planner
  // keeps the plan's weights and KV caches within it).
  req.mutable_resources()->set_memory_bytes(options_.memory_bytes > 0
                                                ? options_.memory_bytes
                                                : AvailableMemoryBytes());
  req.mutable_resources()->set_kv_budget_bytes(options_.kv_budget_bytes);
  req.add_architectures("gpt2");
  req.add_architectures("llama");
  req.set_protocol_version(kProtocolVersion);
  v1::RegisterNodeResponse resp;
  absl::Status s =
      FromGrpcStatus(stub_->RegisterNode(&ctx, req, &resp),
                     absl::StrCat("controller ", options_.controller));
  if (s.ok()) {
    {
      absl::MutexLock lock(&mu_);
      if (resp.heartbeat_interval_ms() > 0) {
        heartbeat_ = absl::Milliseconds(resp.heartbeat_interval_ms());
      }
    }
    if (options_.profile) {
      {
        // A (re-)registered node is new to the controller: what was
        // measured goes with the next beat.
        absl::MutexLock lock(&profile_mu_);
        if (!compute_.empty() || !links_.empty()) ++report_;
      }
      RequestProfile(resp.profile(), resp.profile_version());
    }
  }
  return s;
}

void ControllerLink::TrackLiveCompute() {
  constexpr int64_t kWindow = 8;       // Lone decode steps per comparison.
  constexpr double kTolerance = 1.25;  // Slower or faster by a quarter.
  const std::vector<LiveStageStats> stats = host_->LiveStats();
  absl::MutexLock lock(&profile_mu_);
  for (const LiveStageStats& s : stats) {
    auto profile = compute_.find(ComputeKey(s.model_id, s.weights));
    if (profile == compute_.end() ||
        profile->second.decode_ms_per_block() <= 0) {
      continue;
    }
    const std::string key =
        absl::StrCat(s.model_id, "/", s.first_block, "/", s.last_block, "/",
                     s.head, "/", s.weights);
    auto& seen = live_seen_[key];
    const int64_t n = s.single_token_forwards - seen.first;
    const double ms = s.single_token_ms - seen.second;
    seen = {s.single_token_forwards, s.single_token_ms};
    // A stage reloaded under the same key restarts its counters.
    if (n <= 0 || ms < 0) continue;
    // The stage's blocks, with its head counted in blocks as profiled.
    const v1::ComputeProfile& c = profile->second;
    const double blocks = (s.last_block - s.first_block) +
                          (s.head ? c.head_ms() / c.decode_ms_per_block() : 0);
    if (!(blocks > 0)) continue;
    Window& w = live_window_[key];
    w.forwards += n;
    w.block_ms += ms / blocks;
    if (w.forwards < kWindow) continue;
    const double per_block = w.block_ms / w.forwards;
    w = Window();
    auto base = live_baseline_.find(key);
    if (base == live_baseline_.end() || !(base->second > 0)) {
      // The first window of a stage: live and synthetic timings differ
      // systematically, so later windows compare with this one.
      if (per_block > 0) live_baseline_[key] = per_block;
      continue;
    }
    const double ratio = per_block / base->second;
    if (!std::isfinite(ratio) ||
        (ratio < kTolerance && ratio > 1 / kTolerance)) {
      continue;
    }
    v1::ComputeProfile& updated = profile->second;
    updated.set_decode_ms_per_block(updated.decode_ms_per_block() * ratio);
    updated.set_prefill_ms_per_token(updated.prefill_ms_per_token() * ratio);
    updated.set_head_ms(updated.head_ms() * ratio);
    base->second = per_block;
    ++report_;
  }
}

void ControllerLink::Profile(const v1::ProfileRequest& request) {
  // Measured without the lock: this takes seconds.
  std::map<std::string, v1::ComputeProfile> measured_compute;
  for (const auto& m : request.models()) {
    // The node's own setting, then each type a plan pins here.
    std::vector<std::string> types = {""};
    types.insert(types.end(), m.weights().begin(), m.weights().end());
    for (const std::string& type : types) {
      const std::string key = ComputeKey(m.model_id(), type);
      {
        absl::MutexLock lock(&profile_mu_);
        if (compute_.count(key) > 0 || measured_compute.count(key) > 0) {
          continue;
        }
      }
      ProfileOptions po;
      po.copy_weights = options_.copy_weights;
      po.weights = options_.weights;
      if (!type.empty()) po.weights = kernels::ParseWeightType(type);
      if (!po.weights && !type.empty()) continue;  // Not a type: skipped.
      absl::StatusOr<std::string> dir =
          host_->ModelDir(m.model_id(), m.model_path(), m.model_copy());
      absl::StatusOr<ComputeMeasurement> measured =
          dir.ok() ? ProfileCompute(*dir, po)
                   : absl::StatusOr<ComputeMeasurement>(dir.status());
      if (!measured.ok()) {
        log::Warning(
            absl::StrCat("profiling ", key, ": ", measured.status().message()),
            {{"node", options_.node}});
        continue;
      }
      // An emulated slow machine profiles as slow as it serves.
      const double slow = std::max(host_->compute_slowdown(), 1.0);
      v1::ComputeProfile& c = measured_compute[key];
      c.set_model_id(m.model_id());
      c.set_weights(type);
      c.set_decode_ms_per_block(measured->decode_ms_per_block * slow);
      c.set_prefill_ms_per_token(measured->prefill_ms_per_token * slow);
      c.set_head_ms(measured->head_ms * slow);
    }
  }
  std::vector<v1::LinkProfile> links;
  for (const v1::Hop& peer : request.peers()) {
    if (peer.node() == options_.node || stop_.HasBeenNotified()) continue;
    ProbeOptions po;
    po.timeout = absl::Seconds(5);
    auto stub = peers_.Get(peer.address(), peer.node());
    auto link = stub.ok() ? ProbeLink(*stub, peer.node(), po)
                          : absl::StatusOr<v1::LinkProfile>(stub.status());
    if (!link.ok()) {
      log::Warning(link.status().message(), {{"node", options_.node}});
      continue;
    }
    links.push_back(*link);
  }
  absl::MutexLock lock(&profile_mu_);
  for (auto& [id, c] : measured_compute) compute_[id] = c;
  links_ = std::move(links);
  ++report_;
}

absl::Status ControllerLink::WatchOnce() {
  grpc::ClientContext ctx;
  // A watch is long-lived but still bounded: re-established every 10 min.
  ctx.set_deadline(ToChrono(absl::Now() + absl::Minutes(10)));
  {
    absl::MutexLock lock(&mu_);
    if (stop_.HasBeenNotified()) return absl::CancelledError("stopping");
    watch_ctx_ = &ctx;
  }
  v1::WatchPlanRequest req;
  req.set_node(options_.node);
  auto reader = stub_->WatchPlan(&ctx, req);
  v1::PlanUpdate update;
  while (reader->Read(&update)) {
    // One controller key checks route grants and device tokens alike.
    const std::string& key = update.grant_public_key();
    absl::Status k = options_.grants != nullptr
                         ? options_.grants->SetPublicKey(key)
                         : absl::OkStatus();
    if (TokenAuthority* tokens = options_.security->tokens();
        k.ok() && tokens) {
      k = tokens->SetPublicKey(key);
    }
    if (!k.ok()) {
      log::Error(
          absl::StrCat("bad grant key from the controller: ", k.message()),
          {{"node", options_.node}});
    }
    std::vector<v1::Plan> plans(update.plans().begin(), update.plans().end());
    absl::Status s = host_->ApplyPlans(plans, !update.keep_unlisted());
    if (!s.ok()) {
      log::Error(absl::StrCat("some stages failed to load: ", s.message()),
                 {{"node", options_.node}});
    }
    if (options_.on_plans_applied) options_.on_plans_applied(s);
    absl::MutexLock lock(&mu_);
    ++applied_;
  }
  absl::Status s = FromGrpcStatus(reader->Finish(), "WatchPlan");
  absl::MutexLock lock(&mu_);
  watch_ctx_ = nullptr;
  return s;
}

void ControllerLink::Run() {
  absl::Duration backoff = absl::Milliseconds(100);
  while (!stop_.HasBeenNotified()) {
    absl::Status s = RegisterOnce();
    if (s.ok()) s = WatchOnce();
    if (stop_.HasBeenNotified()) return;
    if (!s.ok() && s.code() != absl::StatusCode::kDeadlineExceeded) {
      log::Warning(absl::StrCat(s.message(), " (retrying)"),
                   {{"node", options_.node}});
      stop_.WaitForNotificationWithTimeout(backoff);
      backoff = std::min(backoff * 2, absl::Seconds(5));
    } else {
      backoff = absl::Milliseconds(100);
    }
  }
}

bool ControllerLink::WaitForPlans(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(
      absl::Condition(
          +[](uint64_t* applied) { return *applied > 0; }, &applied_),
      timeout);
}

uint64_t ControllerLink::plans_applied() const {
  absl::MutexLock lock(&mu_);
  return applied_;
}

}  // namespace edgesplit
