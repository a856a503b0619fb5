// edgesplit-controller --config FILE [--listen HOST:PORT]
//                      [--log-format text|json] [--log-level L]
// Parses flags into the config, validates, starts, and on SIGTERM/SIGINT
// stops accepting, drains calls for up to 5 s, then exits. SIGHUP reloads
// the plan files.
#include <atomic>
#include <csignal>
#include <iostream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "controller/adapter_service.h"
#include "controller/controller.h"
#include "controller/controller_service.h"
#include "controller/status_page.h"
#include "grpcpp/grpcpp.h"
#include "ops/cli.h"
#include "ops/log.h"
#include "ops/ops_http.h"
#include "proto/health.h"

namespace {

volatile std::sig_atomic_t g_signal = 0;
void OnSignal(int sig) { g_signal = sig; }

namespace log = edgesplit::log;

}  // namespace

int main(int argc, char** argv) {
  std::string config_path, listen;
  CLI::App app(
      "The cluster's controller: registers servers, measures them, plans "
      "the splits (from YAML or its planner), routes sessions, averages "
      "federated adapters. SIGHUP re-reads the plan files; SIGTERM/SIGINT "
      "stops taking calls and lets those in flight finish for up to 5 s.",
      "edgesplit-controller");
  app.add_option("--config", config_path, "The controller's YAML config")
      ->required();
  app.add_option("--listen", listen, "gRPC address (HOST:PORT)");
  if (int rc = edgesplit::cli::ParseDaemonFlags(
          app,
          "edgesplit-controller --config /etc/edgesplit/controller.yaml "
          "--log-format json",
          argc, argv);
      rc >= 0) {
    return rc;
  }
  auto config = edgesplit::LoadControllerConfig(config_path);
  if (!config.ok()) {
    log::Error(config.status().message());
    return edgesplit::cli::kExitFailure;
  }
  if (!listen.empty()) config->listen = listen;

  edgesplit::Controller controller(*config, edgesplit::RealClock());
  absl::Status loaded_keys = controller.LoadGrantKey();
  if (loaded_keys.ok()) loaded_keys = controller.LoadState();
  if (!loaded_keys.ok()) {
    log::Error(loaded_keys.message());
    return edgesplit::cli::kExitFailure;
  }
  auto loaded = controller.ReloadPlans();
  for (const auto& e : loaded.errors()) {
    log::Error(absl::StrCat("plan rejected: ", e));
  }
  for (const auto& id : loaded.loaded()) {
    log::Info("plan loaded", {{"model", id}});
  }
  auto security = edgesplit::TransportSecurity::Create(config->tls);
  if (!security.ok()) {
    log::Error(security.status().message());
    return edgesplit::cli::kExitFailure;
  }
  auto credentials = (*security)->ServerCredentials(config->listen);
  if (!credentials.ok()) {
    log::Error(credentials.status().message());
    return edgesplit::cli::kExitFailure;
  }
  edgesplit::ControllerServiceImpl service(&controller, security->get());
  edgesplit::AdapterDemand demand(config->adapter_placement.half_life);
  if (config->adapter_placement.enabled()) {
    service.set_adapter_demand(&demand);
  }
  auto registry = edgesplit::AdapterRegistry::Open(config->state_dir);
  if (!registry.ok()) {
    log::Error(registry.status().message());
    return edgesplit::cli::kExitFailure;
  }
  for (const std::string& skipped : (*registry)->skipped()) {
    log::Warning(absl::StrCat("adapter left out: ", skipped));
  }
  auto copies = edgesplit::ModelCopyRegistry::Open(config->state_dir);
  if (!copies.ok()) {
    log::Error(copies.status().message());
    return edgesplit::cli::kExitFailure;
  }
  for (const std::string& skipped : (*copies)->skipped()) {
    log::Warning(absl::StrCat("model copy left out: ", skipped));
  }
  edgesplit::AdapterServiceImpl adapters(&controller, registry->get(),
                                         security->get(),
                                         config->adapter_placement, &demand);
  adapters.set_model_copies(copies->get());
  edgesplit::EnableHealthService();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(config->listen, *credentials, &port);
  builder.RegisterService(&service);
  builder.RegisterService(&adapters);
  builder.RegisterService(adapters.blob_service());
  (*security)->ConfigureServer(&builder);
  // Device adapters for averaging (split federated learning) exceed gRPC's
  // 4 MiB default on large models.
  builder.SetMaxReceiveMessageSize(edgesplit::kMaxControllerMessageBytes);
  builder.SetMaxSendMessageSize(edgesplit::kMaxControllerMessageBytes);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) {
    log::Error(absl::StrCat("cannot listen on ", config->listen));
    return edgesplit::cli::kExitFailure;
  }
  log::Info(
      "listening",
      {{"port", std::to_string(port)},
       {"transport", (*security)->insecure()
                         ? "INSECURE plaintext, no identities"
                         : "mutual TLS, cluster " + (*security)->cluster()}});

  std::atomic<bool> ready{true};
  std::unique_ptr<edgesplit::OpsHttp> http;
  if (!config->http_listen.empty()) {
    edgesplit::metrics::AddProcessMetrics(controller.metrics_registry());
    edgesplit::AddTlsMetrics(controller.metrics_registry(), security->get());
    auto h = edgesplit::StartControllerHttp(config->http_listen, &controller,
                                            [&ready] { return ready.load(); });
    if (!h.ok()) {
      log::Error(h.status().message());
      return edgesplit::cli::kExitFailure;
    }
    http = *std::move(h);
    log::Info("HTTP (status page, probes, metrics)",
              {{"port", std::to_string(http->port())}});
  }

  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  std::signal(SIGHUP, OnSignal);
  for (;;) {
    absl::SleepFor(absl::Milliseconds(100));
    service.ExpireRounds(absl::Now());
    if (g_signal == SIGHUP) {
      g_signal = 0;
      auto r = controller.ReloadPlans();
      for (const auto& e : r.errors()) {
        log::Error(absl::StrCat("plan rejected: ", e));
      }
      log::Info("plans reloaded",
                {{"version", std::to_string(controller.plan_version())}});
    } else if (g_signal != 0) {
      break;
    }
  }
  log::Info("shutting down");
  edgesplit::SetServing(server.get(), false);
  ready = false;
  // Averaging rounds still waiting would hold their calls: fail them.
  service.ExpireRounds(absl::InfiniteFuture());
  // Stop accepting, let in-flight calls finish for up to 5 s, then cancel.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  if (http != nullptr) http->Stop();
  return edgesplit::cli::kExitOk;
}
