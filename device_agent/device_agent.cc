#include "edgesplit/device_agent.h"

#include <atomic>
#include <map>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "device_agent/remote_sequence.h"
#include "edgesplit/v1/controller.grpc.pb.h"
#include "grpcpp/grpcpp.h"
#include "proto/grpc_status.h"
#include "proto/stage_stream.h"
#include "proto/tensor_codec.h"
#include "runtime/generator.h"
#include "runtime/model_store.h"
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
  absl::Mutex mu;
  RemoteSequence* active ABSL_GUARDED_BY(mu) = nullptr;
  bool cancelled ABSL_GUARDED_BY(mu) = false;

  ~Impl() {
    // Best effort: the controller also forgets sessions of dead devices.
    grpc::ClientContext ctx;
    ctx.set_deadline(ToChrono(absl::Now() + agent->options.rpc_timeout));
    v1::CloseSessionRequest req;
    req.set_session_id(route.session_id());
    v1::CloseSessionResponse resp;
    (void)agent->controller->CloseSession(&ctx, req, &resp);
  }
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
  RemoteSequenceOptions ro;
  // One stream session per generation: fresh KV caches along the route.
  ro.session_id = absl::StrCat(s.route.session_id(), "/", s.generation++);
  ro.model_id = s.model_id;
  ro.adapter = s.adapter;
  ro.codec = s.agent->codec;
  ro.route.assign(s.route.route().begin(), s.route.route().end());
  ro.deadline = absl::Now() + s.agent->options.generation_timeout;
  {
    absl::MutexLock lock(&s.mu);
    s.cancelled = false;
  }
  ES_ASSIGN_OR_RETURN(
      auto seq,
      RemoteSequence::Open(s.model->local.get(), s.model->head.get(),
                           s.agent->stubs.Get(ro.route[0].address()), ro));
  {
    absl::MutexLock lock(&s.mu);
    s.active = seq.get();
    // Cancelled while the route was opening.
    if (s.cancelled) seq->Cancel();
  }
  struct Deactivate {
    Session::Impl& s;
    ~Deactivate() {
      absl::MutexLock lock(&s.mu);
      s.active = nullptr;
    }
  } deactivate{s};
  GenerationOptions g;
  g.sampling.temperature = sampling.temperature;
  g.sampling.top_k = sampling.top_k;
  g.sampling.top_p = sampling.top_p;
  g.sampling.repetition_penalty = sampling.repetition_penalty;
  g.sampling.seed = sampling.seed;
  g.max_new_tokens = sampling.max_new_tokens;
  g.stop_at_eos = sampling.stop_at_eos;
  auto generated =
      edgesplit::Generate(*seq, *s.model->tokenizer, prompt, g, on_text);
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
  const double steps = std::max<int64_t>(seq->steps(), 1);
  stats.device_ms_per_step = seq->local_ms() / steps;
  stats.bytes_sent = seq->bytes_sent();
  stats.stopped_at_eos = r.stopped_at_eos;
  for (const HopStats& h : seq->hop_stats()) {
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
  grpc::ClientContext ctx;
  ctx.set_deadline(ToChrono(absl::Now() + impl_->options.rpc_timeout));
  v1::OpenSessionRequest req;
  req.set_model_id(model_id);
  req.set_adapter(adapter);
  req.set_device(impl_->options.device_name);
  v1::OpenSessionResponse resp;
  ES_RETURN_IF_ERROR(
      FromGrpcStatus(impl_->controller->OpenSession(&ctx, req, &resp),
                     absl::StrCat("controller ", impl_->options.controller)));
  if (resp.route_size() == 0) {
    return absl::InternalError("controller returned an empty route");
  }
  auto dir_it = impl_->options.model_dirs.find(model_id);
  const std::string dir = dir_it != impl_->options.model_dirs.end()
                              ? dir_it->second
                              : resp.plan().model_path();
  auto s = std::make_unique<Session::Impl>();
  s->agent = impl_.get();
  s->model_id = model_id;
  s->adapter = adapter;
  s->route = resp;
  ES_ASSIGN_OR_RETURN(
      s->model, impl_->Load(dir, resp.device_first_block(),
                            resp.device_last_block(), resp.plan().u_shaped()));
  return std::unique_ptr<Session>(new Session(std::move(s)));
}

}  // namespace edgesplit
