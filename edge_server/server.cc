#include "edge_server/server.h"

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "ops/log.h"
#include "proto/health.h"

namespace edgesplit {

absl::StatusOr<std::unique_ptr<EdgeServer>> EdgeServer::Start(
    EdgeServerOptions options) {
  if (options.security == nullptr) {
    return absl::InvalidArgumentError("EdgeServerOptions.security is not set");
  }
  const TransportSecurity& security = *options.security;
  if (!security.insecure() &&
      !(security.identity() ==
        NodeIdentity(security.cluster(), options.host.node))) {
    return absl::InvalidArgumentError(
        absl::StrCat("server ", options.host.node, " holds the certificate of ",
                     security.identity().ToString(),
                     "; its name and its certificate must agree"));
  }
  ES_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                      security.ServerCredentials(options.listen));
  if (!options.controller.empty()) {
    // ControllerLink's precondition: the controller may be dialled.
    ES_RETURN_IF_ERROR(
        security
            .ChannelCredentials(options.controller,
                                ControllerIdentity(security.cluster()))
            .status());
  }
  std::unique_ptr<EdgeServer> s(new EdgeServer(std::move(options)));
  metrics::AddProcessMetrics(s->registry_.get());
  s->metrics_ = std::make_unique<ServerMetrics>(s->registry_.get());
  s->options_.host.batch_metrics = s->metrics_->batch;
  ES_RETURN_IF_ERROR(s->StartDelivery());
  s->host_ = std::make_unique<StageHost>(s->options_.host);
  // Activations of long prompts exceed gRPC's 4 MiB default.
  const int max_message = wire::MaxMessageBytes(s->options_.limits);
  s->next_hops_ =
      std::make_unique<GrpcNextHopFactory>(max_message, s->options_.security);
  SessionEnv env;
  env.host = s->host_.get();
  env.next_hops = s->next_hops_.get();
  s->jobs_ = std::make_unique<TrainingJobs>(s->options_.checkpoint_dir);
  env.jobs = s->jobs_.get();
  env.limits = s->options_.limits;
  s->grants_ = std::make_unique<GrantGate>(!s->options_.security->insecure());
  env.grants = s->grants_.get();
  env.security = s->options_.security.get();
  const AdmissionLimits& limits = s->options_.admission;
  s->pending_inputs_ = UsageBudget::Create("max_pending_input_bytes", "bytes",
                                           limits.max_pending_input_bytes);
  s->kept_tokens_ = UsageBudget::Create("max_kept_training_tokens", "tokens",
                                        limits.max_kept_training_tokens);
  env.pending_inputs = s->pending_inputs_;
  env.kept_training_tokens = s->kept_tokens_;
  env.request_tap = s->options_.request_tap;
  env.metrics = s->metrics_.get();
  s->service_ = std::make_unique<StageServiceImpl>(env, s->options_.admission);

  EnableHealthService();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(s->options_.listen, credentials, &port);
  builder.RegisterService(s->service_.get());
  if (s->blobs_ != nullptr) builder.RegisterService(s->blobs_.get());
  s->options_.security->ConfigureServer(&builder);
  builder.SetMaxReceiveMessageSize(max_message);
  builder.SetMaxSendMessageSize(max_message);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS,
                             limits.max_concurrent_streams);
  if (limits.grpc_memory_bytes > 0) {
    grpc::ResourceQuota quota("edgesplit-server");
    quota.Resize(static_cast<size_t>(limits.grpc_memory_bytes));
    builder.SetResourceQuota(quota);
  }
  s->server_ = builder.BuildAndStart();
  if (s->server_ == nullptr || port == 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", s->options_.listen));
  }
  // With a controller: ready once it holds what the controller planned for
  // it. Without one, at once (its owner loads stages through host()).
  s->SetReady(s->options_.controller.empty());
  AddServerCollectors(s->registry_.get(), s.get());
  if (!s->options_.http_listen.empty()) {
    EdgeServer* self = s.get();
    OpsHttpOptions http;
    http.listen = s->options_.http_listen;
    http.ready = [self] { return self->ready(); };
    http.metrics = s->registry_.get();
    ES_ASSIGN_OR_RETURN(s->http_, OpsHttp::Start(std::move(http)));
  }
  const std::string host =
      s->options_.listen.substr(0, s->options_.listen.rfind(':'));
  s->address_ = absl::StrCat(host, ":", port);
  if (!s->options_.controller.empty()) {
    ControllerLinkOptions lo;
    lo.controller = s->options_.controller;
    lo.node = s->options_.host.node;
    lo.advertise =
        s->options_.advertise.empty() ? s->address_ : s->options_.advertise;
    lo.advertise_peer = s->options_.advertise_peer;
    lo.memory_bytes = s->options_.memory_bytes;
    lo.kv_budget_bytes = s->options_.host.kv_budget_bytes;
    lo.copy_weights = s->options_.host.stage.copy_weights;
    lo.weights = s->options_.host.stage.weights;
    lo.profile = s->options_.profile;
    lo.security = s->options_.security;
    lo.grants = s->grants_.get();
    EdgeServer* server = s.get();
    lo.on_plans_applied = [server](const absl::Status& applied) {
      server->plans_applied_.fetch_add(1);
      server->SetReady(applied.ok());
    };
    StageServiceImpl* service = s->service_.get();
    s->link_ = std::make_unique<ControllerLink>(
        lo, s->host_.get(), [service] { return service->open_sessions(); });
  }
  EdgeServer* self = s.get();
  s->reaper_ = std::thread([self] {
    const absl::Duration tick =
        std::min(absl::Seconds(1), self->options_.session_idle_timeout / 4);
    while (!self->stop_.WaitForNotificationWithTimeout(tick)) {
      self->service_->ExpireIdle(self->options_.session_idle_timeout);
    }
  });
  if (s->adapters_ != nullptr &&
      s->options_.adapter_prefetch_interval > absl::ZeroDuration()) {
    s->prefetcher_ = std::thread([self] {
      // The first round right away: a (re)started server fills its cache
      // before sessions ask.
      absl::Duration wait = absl::ZeroDuration();
      while (!self->prefetch_stop_.WaitForNotificationWithTimeout(wait)) {
        wait = self->options_.adapter_prefetch_interval;
        auto fetched = self->adapters_->Prefetch(
            self->options_.host.adapters.dir,
            [self] { return self->prefetch_stop_.HasBeenNotified(); });
        if (!fetched.ok()) {
          log::Warning(
              absl::StrCat("adapter prefetch: ", fetched.status().message()),
              {{"node", self->node()}});
        }
      }
    });
  }
  return s;
}

absl::Status EdgeServer::StartDelivery() {
  const std::string& adapter_dir = options_.host.adapters.dir;
  const std::string& model_dir = options_.model_dir;
  if (options_.controller.empty() || (adapter_dir.empty() && model_dir.empty()))
    return absl::OkStatus();
  std::string blob_dir = options_.blob_dir;
  if (blob_dir.empty()) {
    blob_dir = (adapter_dir.empty() ? model_dir : adapter_dir) + "/.blobs";
  }
  ES_ASSIGN_OR_RETURN(delivery_, ClusterDelivery::Create(
                                     options_.host.node, options_.controller,
                                     std::move(blob_dir), options_.security));
  if (!adapter_dir.empty()) {
    adapters_ = std::make_unique<ClusterAdapterSource>(
        delivery_.get(), adapter_dir, options_.adapter_disk_bytes);
    options_.host.adapters.source = adapters_.get();
  }
  if (!model_dir.empty()) {
    models_ = std::make_unique<ClusterModelSource>(delivery_.get(), model_dir);
    options_.host.model_copies = models_.get();
  }
  const TransportSecurity* security = options_.security.get();
  blobs_ = std::make_unique<BlobServiceImpl>(
      &delivery_->store(),
      [security](grpc::CallbackServerContext* ctx,
                 const v1::ReadBlobRequest&) -> absl::Status {
        ES_ASSIGN_OR_RETURN(Peer peer, security->PeerOf(*ctx));
        return CheckPeerKind(peer, Identity::Kind::kNode, "read blobs");
      });
  return absl::OkStatus();
}

int EdgeServer::Shutdown(absl::Duration drain) {
  if (shut_down_.exchange(true)) return 0;
  if (server_ == nullptr) return 0;  // Start() failed before serving.
  prefetch_stop_.Notify();
  {
    absl::MutexLock lock(&ready_mu_);
    draining_ = true;  // Balancers and probes look away, for good.
  }
  SetReady(false);
  service_->StopAccepting();
  if (link_ != nullptr) {
    // Out of routing now, rather than after missed heartbeats.
    absl::Status drained = link_->Drain();
    if (!drained.ok()) {
      log::Warning(absl::StrCat("could not tell the controller it drains: ",
                                drained.message()),
                   {{"node", options_.host.node}});
    }
  }
  link_.reset();  // Stop heartbeats.
  const int left = service_->WaitForSessions(absl::Now() + drain);
  if (left > 0) {
    service_->CancelAll(absl::UnavailableError(absl::StrCat(
        "server ", options_.host.node, " shut down (drain deadline passed)")));
  }
  server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(1)));
  stop_.Notify();
  if (reaper_.joinable()) reaper_.join();
  if (prefetcher_.joinable()) prefetcher_.join();
  if (http_ != nullptr) http_->Stop();
  return left;
}

void EdgeServer::SetReady(bool ready) {
  absl::MutexLock lock(&ready_mu_);
  ready = ready && !draining_;
  ready_.store(ready);
  SetServing(server_.get(), ready);
}

EdgeServer::~EdgeServer() { Shutdown(absl::ZeroDuration()); }

}  // namespace edgesplit
