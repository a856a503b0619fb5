#include "edge_server/server_metrics.h"

#include <cmath>
#include <functional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "edge_server/server.h"
#include "proto/tensor_codec.h"

namespace edgesplit {

ServerMetrics::ServerMetrics(metrics::Registry* r) {
  auto* steps = r->AddHistogram(
      "edgesplit_server_step_duration_seconds",
      "Time of a session step on this hop, by phase: queue (waiting for a "
      "forward), compute (one batched forward), next_hop (from passing the "
      "output on to the next hop's answer: network and the hops after), "
      "total (from receiving the request to sending its answer).",
      {"phase"}, metrics::LatencyBuckets());
  batch.queue_seconds = steps->With({"queue"});
  batch.forward_seconds = steps->With({"compute"});
  next_hop_seconds = steps->With({"next_hop"});
  step_seconds = steps->With({"total"});
  batch.batch_items =
      r->AddHistogram("edgesplit_server_batch_size",
                      "Session steps merged into one forward (continuous "
                      "batching).",
                      {}, metrics::ExponentialBuckets(1, 2, 7))
          ->Get();
  batch.tokens = r->AddCounter("edgesplit_server_forward_tokens_total",
                               "Token rows computed by this server's "
                               "forwards (prefill and decode).")
                     ->Get();
  sessions_opened = r->AddCounter("edgesplit_server_sessions_opened_total",
                                  "Sessions opened on this server.", {"kind"});
  sessions_ended = r->AddCounter(
      "edgesplit_server_sessions_ended_total",
      "Sessions ended, by reason: ok (the client closed its stream with "
      "nothing in flight) or the status code that ended it (cancelled: "
      "the stream went away with work in flight).",
      {"kind", "reason"});
  sessions_open = r->AddGauge("edgesplit_server_sessions_open",
                              "Sessions open now.", {"kind"});
  message_bytes = r->AddCounter(
      "edgesplit_server_message_bytes_total",
      "Bytes of session messages (protobuf) received (in) and sent (out), by "
      "the session's activation codec.",
      {"direction", "codec"});
  bytes_by_codec_.push_back({nullptr, nullptr});  // CODEC_UNSPECIFIED
  for (int c = 1; c <= v1::Codec_MAX; ++c) {
    const std::string name(wire::CodecName(static_cast<v1::Codec>(c)));
    bytes_by_codec_.push_back({message_bytes->With({"in", name}),
                               message_bytes->With({"out", name})});
  }
  for (const char* kind : {"inference", "training"}) {
    sessions_open->With({kind});
    sessions_opened->With({kind});
  }
}

void ServerMetrics::SessionOpened(absl::string_view kind) const {
  sessions_opened->With({std::string(kind)})->Increment();
  sessions_open->With({std::string(kind)})->Add(1);
}

void ServerMetrics::SessionEnded(absl::string_view kind,
                                 int status_code) const {
  sessions_open->With({std::string(kind)})->Add(-1);
  sessions_ended->With({std::string(kind), metrics::ReasonLabel(status_code)})
      ->Increment();
}

void ServerMetrics::Bytes(absl::string_view direction, v1::Codec codec,
                          size_t bytes) const {
  const int out = direction == "out" ? 1 : 0;
  if (codec > 0 && static_cast<size_t>(codec) < bytes_by_codec_.size()) {
    bytes_by_codec_[codec][out]->Increment(static_cast<double>(bytes));
  }
}

}  // namespace edgesplit

namespace edgesplit {
namespace {

using metrics::EmitFn;
using metrics::Type;

std::vector<std::string> StageLabels(const LiveStageStats& s) {
  return {s.model_id, absl::StrCat(s.first_block, "-", s.last_block)};
}

void AddAdapterCollectors(metrics::Registry* r, EdgeServer* server) {
  using Field = double (*)(const AdapterCacheStats&);
  struct Spec {
    Type type;
    const char* name;
    const char* help;
    Field field;
  };
  const Spec specs[] = {
      {Type::kGauge, "edgesplit_server_adapter_cache_bytes",
       "Bytes of LoRA adapters held in memory, per hosted stage.",
       [](const AdapterCacheStats& a) {
         return static_cast<double>(a.resident_bytes);
       }},
      {Type::kGauge, "edgesplit_server_adapter_cache_adapters",
       "LoRA adapters held in memory, per hosted stage.",
       [](const AdapterCacheStats& a) {
         return static_cast<double>(a.resident);
       }},
      {Type::kCounter, "edgesplit_server_adapter_cache_hits_total",
       "Sessions whose adapter was in memory, per hosted stage.",
       [](const AdapterCacheStats& a) { return static_cast<double>(a.hits); }},
      {Type::kCounter, "edgesplit_server_adapter_cache_misses_total",
       "Sessions whose adapter had to be loaded (from disk or the cluster), "
       "per hosted stage.",
       [](const AdapterCacheStats& a) {
         return static_cast<double>(a.misses);
       }},
      {Type::kCounter, "edgesplit_server_adapter_cache_evictions_total",
       "Adapters evicted to stay within adapter_cache_mb, per hosted stage.",
       [](const AdapterCacheStats& a) {
         return static_cast<double>(a.evictions);
       }},
  };
  for (const Spec& spec : specs) {
    const Field field = spec.field;
    r->AddCallback(
        spec.type, spec.name, spec.help, {"model", "blocks"},
        [server, field](const EmitFn& emit) {
          for (const LiveStageStats& s : server->host()->LiveStats()) {
            emit(StageLabels(s), field(s.adapters));
          }
        });
  }
}

void AddGauge(metrics::Registry* r, const char* name, const char* help,
              std::function<double()> read) {
  r->AddCallback(
      Type::kGauge, name, help, {},
      [read = std::move(read)](const EmitFn& emit) { emit({}, read()); });
}

}  // namespace

void AddServerCollectors(metrics::Registry* r, EdgeServer* server) {
  AddGauge(r, "edgesplit_server_kv_cache_bytes",
           "Bytes of KV cache the server's sessions hold now.", [server] {
             return static_cast<double>(server->host()->kv_budget()->used());
           });
  AddGauge(r, "edgesplit_server_kv_cache_limit_bytes",
           "The KV cache budget shared by all sessions (kv_budget_mb).",
           [server] {
             return static_cast<double>(server->host()->kv_budget()->limit());
           });
  AddGauge(
      r, "edgesplit_server_pending_input_bytes",
      "Bytes of decoded forward inputs waiting for compute "
      "(max_pending_input_bytes bounds them).",
      [server] { return static_cast<double>(server->pending_input_bytes()); });
  AddGauge(r, "edgesplit_server_ready",
           "1 while the server takes new sessions (as /readyz says), else 0.",
           [server] { return server->ready() ? 1.0 : 0.0; });
  r->AddCallback(Type::kCounter, "edgesplit_server_plan_updates_total",
                 "Plan updates from the controller applied.", {},
                 [server](const EmitFn& emit) {
                   emit({}, static_cast<double>(server->plans_applied()));
                 });
  AddAdapterCollectors(r, server);
  r->AddCallback(Type::kCounter, "edgesplit_server_training_steps_total",
                 "Optimizer updates applied per training job and hosted stage.",
                 {"job", "model", "blocks"}, [server](const EmitFn& emit) {
                   for (const auto& j : server->jobs().Summaries()) {
                     emit({j.job_id, j.model_id,
                           absl::StrCat(j.first_block, "-", j.last_block)},
                          static_cast<double>(j.steps));
                   }
                 });
  r->AddCallback(
      Type::kGauge, "edgesplit_server_training_loss",
      "Loss of the last training micro-batch computed here (hops with the "
      "LM head only), per job.",
      {"job", "model", "blocks"}, [server](const EmitFn& emit) {
        for (const auto& j : server->jobs().Summaries()) {
          if (std::isnan(j.last_loss)) continue;
          emit({j.job_id, j.model_id,
                absl::StrCat(j.first_block, "-", j.last_block)},
               j.last_loss);
        }
      });
  AddTlsMetrics(r, &server->security());
}

}  // namespace edgesplit
