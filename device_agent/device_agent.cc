#include "edgesplit/device_agent.h"

#include <atomic>
#include <map>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "device_agent/remote_sequence.h"
#include "edgesplit/v1/controller.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "proto/grpc_status.h"
#include "proto/probe.h"
#include "proto/stage_stream.h"
#include "proto/tensor_codec.h"
#include "runtime/generator.h"
#include "runtime/model_store.h"
#include "runtime/profiler.h"
#include "runtime/status_macros.h"
#include "runtime/threading.h"

namespace edgesplit {
namespace {

// This device's part of a model: its stages and the tokenizer.
struct LocalModel {
  std::unique_ptr<ModelStore> store;
  std::unique_ptr<StageModel> local;  // Embedding + blocks [0, k).
  std::unique_ptr<StageModel> head;   // U-shaped plans only.
  std::unique_ptr<Tokenizer> tokenizer;
};

}  // namespace

struct DeviceAgent::Impl {
  DeviceAgentOptions options;
  v1::Codec codec = v1::CODEC_FP32;
  std::unique_ptr<v1::ControllerService::Stub> controller;
  StageStubCache stubs{wire::MaxMessageBytes()};
  absl::Mutex mu;
  // (model directory, device blocks first, last, U-shaped)
  using Key = std::tuple<std::string, int64_t, int64_t, bool>;
  std::map<Key, std::shared_ptr<LocalModel>> models ABSL_GUARDED_BY(mu);

  // What the next OpenSession reports (report_profile).
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
  absl::StatusOr<v1::OpenSessionResponse> OpenRoute(
      const std::string& model_id, const std::string& adapter,
      const std::vector<std::string>& suspects, absl::Time deadline) {
    absl::Duration backoff = absl::Milliseconds(50);
    for (int attempt = 0;; ++attempt) {
      grpc::ClientContext ctx;
      ctx.set_deadline(
          ToChrono(std::min(deadline, absl::Now() + options.rpc_timeout)));
      v1::OpenSessionRequest req;
      req.set_model_id(model_id);
      req.set_adapter(adapter);
      req.set_device(options.device_name);
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
      if (s.ok()) return resp;
      // UNAVAILABLE: no plan without the suspects yet. Others are final.
      if (s.code() != absl::StatusCode::kUnavailable ||
          absl::Now() + backoff >= deadline || suspects.empty()) {
        return s;
      }
      absl::SleepFor(backoff);
      backoff = std::min(backoff * 2, absl::Milliseconds(500));
    }
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
    auto link = ProbeLink(stubs.Get(hop.address()), hop.node());
    absl::MutexLock lock(&profile_mu);
    if (!link.ok()) return;
    profile.clear_links();
    *profile.add_links() = *link;
    last_hop = hop;
  }

  absl::StatusOr<std::shared_ptr<LocalModel>> Load(const std::string& dir,
                                                   int64_t first, int64_t last,
                                                   bool u_shaped) {
    const Key key(dir, first, last, u_shaped);
    {
      absl::MutexLock lock(&mu);
      auto it = models.find(key);
      if (it != models.end()) return it->second;
    }
    auto m = std::make_shared<LocalModel>();
    ES_ASSIGN_OR_RETURN(m->store, ModelStore::Open(dir));
    StageOptions so;
    so.copy_weights = options.copy_weights;
    ES_ASSIGN_OR_RETURN(
        m->local,
        StageModel::Load(*m->store, {{first, last}, true, false}, so));
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

struct Session::Impl {
  DeviceAgent::Impl* agent = nullptr;
  std::shared_ptr<LocalModel> model;
  v1::OpenSessionResponse route;
  std::string model_id, adapter;
  int generation = 0;

  class Rerouting;  // Below: a LogitsModel that survives route changes.

  // Where this device keeps the model: its own directory if configured,
  // else the path in `r`'s plan.
  std::string ModelDir(const v1::OpenSessionResponse& r) const {
    auto it = agent->options.model_dirs.find(model_id);
    return it != agent->options.model_dirs.end() ? it->second
                                                 : r.plan().model_path();
  }
  std::string ModelDir() const { return ModelDir(route); }
  // Adopts a route from the controller: loads this device's part of it.
  absl::Status Adopt(v1::OpenSessionResponse r) {
    // The route and the local model change together, or not at all: a
    // device running other blocks than its route assumes would compute
    // nonsense with the right shapes.
    auto loaded = agent->Load(ModelDir(r), r.device_first_block(),
                              r.device_last_block(), r.plan().u_shaped());
    if (!loaded.ok()) {
      CloseOnController(r.session_id());
      return loaded.status();
    }
    const std::string old_id = route.session_id();
    route = std::move(r);
    model = *std::move(loaded);
    if (!old_id.empty()) CloseOnController(old_id);
    return absl::OkStatus();
  }
  void CloseOnController(const std::string& id) {
    grpc::ClientContext ctx;
    ctx.set_deadline(ToChrono(absl::Now() + agent->options.rpc_timeout));
    v1::CloseSessionRequest req;
    req.set_session_id(id);
    // What was measured since the session opened reaches the controller
    // even from a process that ends now (the CLI).
    if (agent->options.report_profile) {
      absl::MutexLock lock(&agent->profile_mu);
      *req.mutable_profile() = agent->profile;
      req.mutable_profile()->set_memory_bytes(agent->options.memory_bytes);
      req.mutable_profile()->set_joules_per_flop(
          agent->options.joules_per_flop);
      req.mutable_profile()->set_joules_per_bit(agent->options.joules_per_bit);
    }
    v1::CloseSessionResponse resp;
    (void)agent->controller->CloseSession(&ctx, req, &resp);
  }
  // After `failure` on the current route: finds the hops that no longer
  // answer (a short probe each), and adopts a route without them.
  absl::Status Reroute(const absl::Status& failure, absl::Time deadline) {
    std::vector<std::string> suspects;
    for (const v1::Hop& hop : route.route()) {
      ProbeOptions po;
      po.rtt_probes = 1;
      po.payload_bytes = 1024;
      po.timeout = std::min(agent->options.rpc_timeout, absl::Seconds(2));
      if (!ProbeLink(agent->stubs.Get(hop.address()), hop.node(), po).ok()) {
        suspects.push_back(hop.node());
      }
    }
    // Nodes that are alive beat again within a few heartbeats; a route that
    // needs longer is not coming.
    auto next = agent->OpenRoute(
        model_id, adapter, suspects,
        std::min(deadline, absl::Now() + agent->options.rpc_timeout));
    if (!next.ok()) {
      return absl::Status(failure.code(),
                          absl::StrCat(failure.message(), "; no new route: ",
                                       next.status().message()));
    }
    return Adopt(*std::move(next));
  }
  absl::Mutex mu;
  RemoteSequence* active ABSL_GUARDED_BY(mu) = nullptr;
  bool cancelled ABSL_GUARDED_BY(mu) = false;

  ~Impl() {
    // Best effort: the controller also forgets sessions of dead devices.
    CloseOnController(route.session_id());
  }
};

namespace {

bool Reroutable(const absl::Status& s) {
  // A hop gone (UNAVAILABLE), or a hop that no longer holds the stage after
  // a re-plan (NOT_FOUND). Bad input, cancellation and deadlines are final.
  return s.code() == absl::StatusCode::kUnavailable ||
         s.code() == absl::StatusCode::kNotFound;
}

// A sequence that survives route changes: on a reroutable failure it gets
// a new route and replays the tokens so far (prompt + generated) there,
// which rebuilds every KV cache, then answers the step that failed. The
// logits it returns are those of the same context, so generation goes on
// at the same token.
}  // namespace

class Session::Impl::Rerouting : public LogitsModel {
 public:
  Rerouting(Session::Impl* session, absl::Time deadline,
            std::function<void(RemoteSequence*)> on_active)
      : s_(session), deadline_(deadline), on_active_(std::move(on_active)) {}
  ~Rerouting() override { on_active_(nullptr); }

  absl::Status Open() {
    RemoteSequenceOptions ro;
    // One stream session per attempt: fresh KV caches along the route.
    ro.session_id = absl::StrCat(s_->route.session_id(), "/", s_->generation++);
    ro.model_id = s_->model_id;
    ro.adapter = s_->adapter;
    ro.codec = s_->agent->codec;
    ro.route.assign(s_->route.route().begin(), s_->route.route().end());
    ro.deadline = deadline_;
    ro.compute_slowdown = s_->agent->options.compute_slowdown;
    on_active_(nullptr);
    ES_ASSIGN_OR_RETURN(
        seq_,
        RemoteSequence::Open(s_->model->local.get(), s_->model->head.get(),
                             s_->agent->stubs.Get(ro.route[0].address()), ro));
    on_active_(seq_.get());
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<float>> Forward(
      absl::Span<const int32_t> tokens) override {
    auto logits = seq_->Forward(tokens);
    while (!logits.ok() && Reroutable(logits.status()) &&
           reroutes_ < s_->agent->options.max_reroutes &&
           absl::Now() < deadline_) {
      ++reroutes_;
      // End the failed route's sessions first: replaying on the same
      // servers must not find their KV budget held by the old caches.
      seq_->Cancel();
      ES_RETURN_IF_ERROR(s_->Reroute(logits.status(), deadline_));
      absl::Status opened = OpenWhenLoaded();
      if (!opened.ok()) {
        logits = opened;
        continue;
      }
      std::vector<int32_t> replay = history_;
      replay.insert(replay.end(), tokens.begin(), tokens.end());
      logits = seq_->Forward(replay);
    }
    if (logits.ok())
      history_.insert(history_.end(), tokens.begin(), tokens.end());
    return logits;
  }
  int64_t context_length() const override { return seq_->context_length(); }

  RemoteSequence& current() { return *seq_; }

  // Open() on a route the controller just planned: its servers may still be
  // loading their new stages (NOT_FOUND) for a moment.
  absl::Status OpenWhenLoaded() {
    const absl::Time until =
        std::min(deadline_, absl::Now() + s_->agent->options.rpc_timeout);
    absl::Duration backoff = absl::Milliseconds(20);
    for (;;) {
      absl::Status s = Open();
      if (s.ok() || s.code() != absl::StatusCode::kNotFound ||
          absl::Now() + backoff > until) {
        return s;
      }
      absl::SleepFor(backoff);
      backoff = std::min(backoff * 2, absl::Milliseconds(500));
    }
  }
  int reroutes() const { return reroutes_; }

 private:
  Session::Impl* const s_;
  const absl::Time deadline_;
  std::function<void(RemoteSequence*)> on_active_;
  std::unique_ptr<RemoteSequence> seq_;
  std::vector<int32_t> history_;
  int reroutes_ = 0;
};

Session::Session(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Session::~Session() = default;

void Session::Cancel() {
  absl::MutexLock lock(&impl_->mu);
  impl_->cancelled = true;
  if (impl_->active != nullptr) impl_->active->Cancel();
}

const std::string& Session::session_id() const {
  return impl_->route.session_id();
}

std::string Session::route() const {
  const auto& r = impl_->route;
  std::string out = absl::StrCat("device [", r.device_first_block(), ", ",
                                 r.device_last_block(), ")");
  for (const auto& hop : r.route()) {
    absl::StrAppend(&out, " -> ", hop.node(), " [", hop.first_block(), ", ",
                    hop.last_block(), ")");
  }
  absl::StrAppend(&out, r.plan().u_shaped() ? " -> device head" : " + head");
  return out;
}

absl::StatusOr<GenerationStats> Session::Generate(
    absl::string_view prompt, const SamplingOptions& sampling,
    const std::function<void(absl::string_view)>& on_text) {
  Impl& s = *impl_;
  {
    absl::MutexLock lock(&s.mu);
    s.cancelled = false;
  }
  Impl::Rerouting seq(&s, absl::Now() + s.agent->options.generation_timeout,
                      [&s](RemoteSequence* active) {
                        absl::MutexLock lock(&s.mu);
                        s.active = active;
                        // Cancelled while a route was opening.
                        if (active != nullptr && s.cancelled) active->Cancel();
                      });
  // A route planned a moment ago may still be loading on its servers.
  ES_RETURN_IF_ERROR(seq.OpenWhenLoaded());
  GenerationOptions g;
  g.sampling.temperature = sampling.temperature;
  g.sampling.top_k = sampling.top_k;
  g.sampling.top_p = sampling.top_p;
  g.sampling.repetition_penalty = sampling.repetition_penalty;
  g.sampling.seed = sampling.seed;
  g.max_new_tokens = sampling.max_new_tokens;
  g.stop_at_eos = sampling.stop_at_eos;
  auto generated =
      edgesplit::Generate(seq, *s.model->tokenizer, prompt, g, on_text);
  {
    absl::MutexLock lock(&s.mu);
    if (s.cancelled) return absl::CancelledError("generation cancelled");
  }
  ES_ASSIGN_OR_RETURN(GenerationResult r, std::move(generated));
  GenerationStats stats;
  stats.text = std::move(r.text);
  stats.tokens = std::move(r.tokens);
  stats.prompt_tokens = static_cast<int32_t>(r.prompt_ids.size());
  stats.prefill_ms = r.prefill_seconds * 1e3;
  stats.decode_tokens_per_s = stats.tokens.size() > 1
                                  ? (stats.tokens.size() - 1) / r.decode_seconds
                                  : 0.0;
  RemoteSequence& last = seq.current();
  const double steps = std::max<int64_t>(last.steps(), 1);
  stats.device_ms_per_step = last.local_ms() / steps;
  stats.bytes_sent = last.bytes_sent();
  stats.stopped_at_eos = r.stopped_at_eos;
  stats.reroutes = seq.reroutes();
  for (const HopStats& h : last.hop_stats()) {
    stats.hops.push_back({h.node, h.compute_ms / steps, h.total_ms / steps});
  }
  return stats;
}

DeviceAgent::DeviceAgent(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
DeviceAgent::~DeviceAgent() = default;

absl::StatusOr<std::unique_ptr<DeviceAgent>> DeviceAgent::Connect(
    const DeviceAgentOptions& options) {
  if (options.controller.empty()) {
    return absl::InvalidArgumentError("DeviceAgentOptions.controller is empty");
  }
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  ES_ASSIGN_OR_RETURN(impl->codec, wire::ParseCodec(options.codec));
  SetComputeThreads(options.threads);
  impl->controller = v1::ControllerService::NewStub(grpc::CreateChannel(
      options.controller, grpc::InsecureChannelCredentials()));
  return std::unique_ptr<DeviceAgent>(new DeviceAgent(std::move(impl)));
}

absl::StatusOr<std::unique_ptr<Session>> DeviceAgent::OpenSession(
    const std::string& model_id, const std::string& adapter) {
  v1::Hop previous;
  {
    absl::MutexLock lock(&impl_->profile_mu);
    previous = impl_->last_hop;
  }
  if (!previous.address().empty()) impl_->ProfileLink(previous);
  ES_ASSIGN_OR_RETURN(
      v1::OpenSessionResponse resp,
      impl_->OpenRoute(model_id, adapter, {},
                       absl::Now() + impl_->options.rpc_timeout));
  auto s = std::make_unique<Session::Impl>();
  s->agent = impl_.get();
  s->model_id = model_id;
  s->adapter = adapter;
  ES_RETURN_IF_ERROR(s->Adopt(std::move(resp)));
  impl_->ProfileModel(model_id, s->ModelDir());
  impl_->ProfileLink(s->route.route(0));
  return std::unique_ptr<Session>(new Session(std::move(s)));
}

}  // namespace edgesplit
