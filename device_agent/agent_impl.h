// The device agent's shared state (internal): the controller connection,
// stage stubs, loaded models and the profile to report. Used by sessions
// (device_agent.cc) and trainers (training.cc).
#ifndef EDGESPLIT_DEVICE_AGENT_AGENT_IMPL_H_
#define EDGESPLIT_DEVICE_AGENT_AGENT_IMPL_H_

#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "base/status_macros.h"
#include "delivery/model_pack.h"
#include "device_agent/adapter_download.h"
#include "edgesplit/device_agent.h"
#include "edgesplit/v1/controller.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "privacy/budget.h"
#include "proto/grpc_status.h"
#include "proto/probe.h"
#include "proto/stage_stream.h"
#include "proto/tensor_codec.h"
#include "runtime/model_store.h"
#include "runtime/profiler.h"
#include "runtime/stage_model.h"
#include "runtime/tokenizer/tokenizer.h"
#include "security/grant.h"

namespace edgesplit {

// "device [0, 1) -> server-a [1, 3) -> server-b [3, 5) + head"
inline std::string RouteString(const v1::OpenSessionResponse& r) {
  std::string out = absl::StrCat("device [", r.device_first_block(), ", ",
                                 r.device_last_block(), ")");
  for (const auto& hop : r.route()) {
    absl::StrAppend(&out, " -> ", hop.node(), " [", hop.first_block(), ", ",
                    hop.last_block(), ")");
  }
  absl::StrAppend(&out, r.plan().u_shaped() ? " -> device head" : " + head");
  return out;
}

// This device's part of a model: its stages and the tokenizer.
struct LocalModel {
  std::unique_ptr<ModelStore> store;
  // Embedding + blocks [0, k); null when the plan gives the device zero
  // blocks (the first server embeds).
  std::unique_ptr<StageModel> local;
  std::unique_ptr<StageModel> head;  // U-shaped plans only.
  std::unique_ptr<Tokenizer> tokenizer;
};

// FAILED_PRECONDITION unless `privacy` meets the floor the operator set in
// the plan of `r` (its `privacy:` section; none: OK). The device enforces
// it: the servers cannot tell noise from signal.
inline absl::Status CheckPlanPrivacy(const v1::OpenSessionResponse& r,
                                     const PrivacyOptions& privacy) {
  const v1::PrivacyRequirement& need = r.plan().privacy();
  if (need.max_epsilon() <= 0) return absl::OkStatus();
  if (privacy.epsilon > 0 && privacy.epsilon <= need.max_epsilon() &&
      privacy.delta <= need.max_delta()) {
    return absl::OkStatus();
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "the plan of model ", r.plan().model_id(), " (", r.plan().source(),
      ") requires privacy with epsilon <= ", need.max_epsilon(),
      " at delta <= ", need.max_delta(), "; this ",
      privacy.epsilon > 0 ? absl::StrCat("asks for epsilon ", privacy.epsilon,
                                         " at delta ", privacy.delta)
                          : std::string("has privacy off"),
      " (PrivacyOptions, --privacy-epsilon)"));
}

// The weight type a route's plan gives the device stage (its first).
inline std::string DeviceStageWeights(const v1::OpenSessionResponse& r) {
  return r.plan().stages_size() > 0 ? r.plan().stages(0).weights() : "";
}

struct DeviceAgent::Impl {
  DeviceAgentOptions options;
  v1::Codec codec = v1::CODEC_FP32;
  std::unique_ptr<v1::ControllerService::Stub> controller;
  std::shared_ptr<grpc::Channel> controller_channel;

  // The last route the controller gave for each (model, adapter), reused
  // for new sessions while the controller cannot be reached.
  struct CachedRoute {
    v1::OpenSessionResponse response;
    absl::Time issued;
    int reused = 0;
  };
  absl::Mutex routes_mu;
  std::map<std::pair<std::string, std::string>, CachedRoute> cached_routes
      ABSL_GUARDED_BY(routes_mu);
  std::shared_ptr<const TransportSecurity> security;
  std::unique_ptr<StageStubCache> stubs;
  // options.privacy_budget_file's budget; null without one.
  std::unique_ptr<privacy::PrivacyBudget> privacy_budget;
  absl::Mutex mu;
  // (model directory, device blocks first, last, U-shaped, weight type)
  using Key = std::tuple<std::string, int64_t, int64_t, bool, std::string>;
  std::map<Key, std::shared_ptr<LocalModel>> models ABSL_GUARDED_BY(mu);

  // What the next OpenSession reports (report_profile).
  absl::Mutex adapter_mu;  // One adapter download at a time.
  absl::Mutex model_mu;    // One model copy download at a time.

  // Where this device keeps `model_id` for `plan`: its model_dirs entry;
  // else the copy the plan names, in model_cache_dir; else the plan's
  // path.
  std::string ModelDirFor(const std::string& model_id,
                          const v1::Plan& plan) const {
    auto it = options.model_dirs.find(model_id);
    if (it != options.model_dirs.end()) return it->second;
    if (!plan.model_copy().empty() && !options.model_cache_dir.empty()) {
      auto dir =
          ModelCopyDir(options.model_cache_dir, model_id, plan.model_copy());
      // A bad name fails EnsureModel first.
      if (dir.ok()) return *dir;
    }
    return plan.model_path();
  }
  // Makes ModelDirFor's directory hold the model: fetches the copy `plan`
  // names unless the device reads the model from model_dirs.
  absl::Status EnsureModel(const std::string& model_id, const v1::Plan& plan) {
    if (plan.model_copy().empty() || options.model_dirs.count(model_id) > 0) {
      return absl::OkStatus();
    }
    if (options.model_cache_dir.empty()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the plan for model ", model_id, " names model copy \"",
          plan.model_copy(),
          "\": give the device a model_cache_dir (it fetches the copy) or "
          "a model_dirs entry for the model"));
    }
    ES_ASSIGN_OR_RETURN(
        std::string dir,
        ModelCopyDir(options.model_cache_dir, model_id, plan.model_copy()));
    std::error_code ec;
    // Written whole: there means complete (no wait behind a download).
    if (std::filesystem::exists(dir, ec)) return absl::OkStatus();
    absl::MutexLock lock(&model_mu);
    return DownloadModelCopy(controller_channel, model_id, plan.model_copy(),
                             options.model_cache_dir, options.rpc_timeout)
        .status();
  }
  absl::Mutex profile_mu;
  v1::DeviceProfile profile ABSL_GUARDED_BY(profile_mu);
  std::set<std::string> profiled ABSL_GUARDED_BY(profile_mu);  // Model ids.
  absl::Time link_measured ABSL_GUARDED_BY(profile_mu) = absl::InfinitePast();
  // The first hop of the last session: measured again before the next
  // session asks for a route, so the controller plans with a fresh link.
  v1::Hop last_hop ABSL_GUARDED_BY(profile_mu);

  // Asks the controller for a session of `model_id`, leaving out
  // `suspects`; retries while no plan exists yet (UNAVAILABLE) until
  // `deadline`, as nodes that are alive beat again and are planned on.
  // `training_job`: set for a training session (the grant names it).
  absl::StatusOr<v1::OpenSessionResponse> OpenRoute(
      const std::string& model_id, const std::string& adapter,
      const std::vector<std::string>& suspects, absl::Time deadline,
      const std::string& training_job = "",
      const std::vector<std::string>& job_members = {}) {
    absl::Duration backoff = absl::Milliseconds(50);
    for (int attempt = 0;; ++attempt) {
      grpc::ClientContext ctx;
      ctx.set_deadline(
          ToChrono(std::min(deadline, absl::Now() + options.rpc_timeout)));
      v1::OpenSessionRequest req;
      req.set_model_id(model_id);
      req.set_adapter(adapter);
      req.set_device(options.device_name);
      req.set_codec(codec);
      req.set_training_job(training_job);
      for (const std::string& m : job_members) req.add_job_members(m);
      // Suspects are reported once; later attempts just wait for a plan.
      if (attempt == 0) {
        for (const std::string& n : suspects) req.add_suspects(n);
      }
      if (options.report_profile) {
        {
          absl::MutexLock lock(&profile_mu);
          *req.mutable_profile() = profile;
        }
        req.mutable_profile()->set_memory_bytes(options.memory_bytes);
        req.mutable_profile()->set_joules_per_flop(options.joules_per_flop);
        req.mutable_profile()->set_joules_per_bit(options.joules_per_bit);
      }
      v1::OpenSessionResponse resp;
      absl::Status s =
          FromGrpcStatus(controller->OpenSession(&ctx, req, &resp),
                         absl::StrCat("controller ", options.controller));
      if (s.ok() && resp.route_size() == 0) {
        return absl::InternalError("controller returned an empty route");
      }
      if (s.ok()) {
        if (training_job.empty()) {
          absl::MutexLock lock(&routes_mu);
          cached_routes[{model_id, adapter}] = {resp, absl::Now(), 0};
        }
        return resp;
      }
      if (training_job.empty() && suspects.empty()) {
        auto cached = CachedRouteFor(model_id, adapter, s);
        if (cached.ok()) return cached;
      }
      // UNAVAILABLE: no plan without the suspects yet. Others are final.
      if (s.code() != absl::StatusCode::kUnavailable ||
          absl::Now() + backoff >= deadline || suspects.empty()) {
        return s;
      }
      absl::SleepFor(backoff);
      backoff = std::min(backoff * 2, absl::Milliseconds(500));
    }
  }

  // While the controller cannot be reached (`failure` is a transport
  // error and the channel is not connected), the model's last route if it
  // was issued within cached_route_ttl and its grant is still valid, as a
  // new session below the cached one (grants admit "<id>/..." sessions).
  absl::StatusOr<v1::OpenSessionResponse> CachedRouteFor(
      const std::string& model_id, const std::string& adapter,
      const absl::Status& failure) {
    const bool unreachable =
        (failure.code() == absl::StatusCode::kUnavailable ||
         failure.code() == absl::StatusCode::kDeadlineExceeded) &&
        controller_channel != nullptr &&
        controller_channel->GetState(false) != GRPC_CHANNEL_READY;
    if (!unreachable || options.cached_route_ttl <= absl::ZeroDuration()) {
      return failure;
    }
    absl::MutexLock lock(&routes_mu);
    auto it = cached_routes.find({model_id, adapter});
    const absl::Time now = absl::Now();
    if (it == cached_routes.end() ||
        now - it->second.issued > options.cached_route_ttl) {
      return failure;
    }
    v1::OpenSessionResponse r = it->second.response;
    if (!r.grant().grant().empty()) {
      auto g = ParseGrant(r.grant().grant());
      if (!g.ok() || absl::FromUnixMillis(g->expires_unix_ms()) <= now) {
        return failure;
      }
    }
    r.set_session_id(
        absl::StrCat(r.session_id(), "/cached-", ++it->second.reused));
    return r;
  }

  // Measures this device once per model (compute, and the link to the
  // route's first hop) for the controller's planner.
  // Measures this device's compute for a model, once (report_profile).
  void ProfileModel(const std::string& model_id, const std::string& dir) {
    {
      absl::MutexLock lock(&profile_mu);
      if (!options.report_profile || !profiled.insert(model_id).second) return;
    }
    ProfileOptions po;
    po.copy_weights = options.copy_weights;
    if (!options.weights.empty()) {
      po.weights = kernels::ParseWeightType(options.weights);
    }
    auto compute = ProfileCompute(dir, po);
    if (!compute.ok()) return;  // Unpriced: the controller plans without it.
    const double slow = std::max(options.compute_slowdown, 1.0);
    v1::ComputeProfile c;
    c.set_model_id(model_id);
    c.set_decode_ms_per_block(compute->decode_ms_per_block * slow);
    c.set_prefill_ms_per_token(compute->prefill_ms_per_token * slow);
    c.set_head_ms(compute->head_ms * slow);
    // The device embeds every step: its fixed cost per request.
    c.set_overhead_ms(compute->embed_ms * slow);
    absl::MutexLock lock(&profile_mu);
    *profile.add_compute() = c;
  }

  // Measures the link to `hop` unless measured within
  // link_profile_interval. Only the latest measurement is kept: the
  // device's access link limits all its links, and an older measurement
  // to another server would be stale.
  void ProfileLink(const v1::Hop& hop) {
    {
      absl::MutexLock lock(&profile_mu);
      if (!options.report_profile ||
          absl::Now() - link_measured < options.link_profile_interval) {
        return;
      }
      link_measured = absl::Now();
    }
    auto stub = stubs->Get(hop.address(), hop.node());
    auto link = stub.ok() ? ProbeLink(*stub, hop.node())
                          : absl::StatusOr<v1::LinkProfile>(stub.status());
    absl::MutexLock lock(&profile_mu);
    if (!link.ok()) return;
    profile.clear_links();
    *profile.add_links() = *link;
    last_hop = hop;
  }

  // Tells the controller session `id` ended, with what this device
  // measured since (it reaches the controller even from a process that
  // ends now, the CLI). Best effort.
  void CloseRoute(const std::string& id) {
    grpc::ClientContext ctx;
    ctx.set_deadline(ToChrono(absl::Now() + options.rpc_timeout));
    v1::CloseSessionRequest req;
    req.set_session_id(id);
    if (options.report_profile) {
      absl::MutexLock lock(&profile_mu);
      *req.mutable_profile() = profile;
      req.mutable_profile()->set_memory_bytes(options.memory_bytes);
      req.mutable_profile()->set_joules_per_flop(options.joules_per_flop);
      req.mutable_profile()->set_joules_per_bit(options.joules_per_bit);
    }
    v1::CloseSessionResponse resp;
    (void)controller->CloseSession(&ctx, req, &resp);
  }

  // The device's blocks of a route; `plan_weights` is the plan's weight
  // type for the device stage ("" = options.weights).
  absl::StatusOr<std::shared_ptr<LocalModel>> Load(
      const std::string& dir, int64_t first, int64_t last, bool u_shaped,
      const std::string& plan_weights = "") {
    const std::string weights =
        plan_weights.empty() ? options.weights : plan_weights;
    const Key key(dir, first, last, u_shaped, weights);
    {
      absl::MutexLock lock(&mu);
      auto it = models.find(key);
      if (it != models.end()) return it->second;
    }
    auto m = std::make_shared<LocalModel>();
    ES_ASSIGN_OR_RETURN(m->store, ModelStore::Open(dir));
    StageOptions so;
    so.copy_weights = options.copy_weights;
    if (!weights.empty()) {
      so.weights = kernels::ParseWeightType(weights);
      if (!so.weights) {
        return absl::InvalidArgumentError(
            absl::StrCat("the plan's device weight type \"", weights,
                         "\" is not one of ", kernels::WeightTypeList()));
      }
    }
    // Zero device blocks: the first server embeds; the device loads no
    // weights for the route (a U-shaped one still needs the head).
    if (last > first) {
      ES_ASSIGN_OR_RETURN(
          m->local,
          StageModel::Load(*m->store, {{first, last}, true, false}, so));
    }
    if (u_shaped) {
      const int64_t n = m->store->config().num_layers;
      ES_ASSIGN_OR_RETURN(
          m->head, StageModel::Load(*m->store, {{n, n}, false, true}, so));
    }
    ES_ASSIGN_OR_RETURN(m->tokenizer, m->store->LoadTokenizer());
    absl::MutexLock lock(&mu);
    models[key] = m;
    return m;
  }
};

}  // namespace edgesplit

#endif  // EDGESPLIT_DEVICE_AGENT_AGENT_IMPL_H_
