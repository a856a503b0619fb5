// edgesplit-controller --config FILE [--listen HOST:PORT]
// Parses flags into the config, validates, starts, and on SIGTERM/SIGINT
// stops accepting, drains calls for up to 5 s, then exits. SIGHUP reloads
// the plan files.
#include <atomic>
#include <csignal>
#include <iostream>
#include <string>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "controller/adapter_service.h"
#include "controller/controller.h"
#include "controller/controller_service.h"
#include "controller/status_page.h"
#include "grpcpp/grpcpp.h"
#include "ops/ops_http.h"
#include "proto/health.h"

namespace {

volatile std::sig_atomic_t g_signal = 0;
void OnSignal(int sig) { g_signal = sig; }

int Usage() {
  std::cerr << "usage: edgesplit-controller --config FILE "
               "[--listen HOST:PORT]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path, listen;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if ((a == "--config" || a == "--listen") && i + 1 < argc) {
      (a == "--config" ? config_path : listen) = argv[++i];
    } else {
      return Usage();
    }
  }
  if (config_path.empty()) return Usage();
  auto config = edgesplit::LoadControllerConfig(config_path);
  if (!config.ok()) {
    std::cerr << "edgesplit-controller: " << config.status().message() << "\n";
    return 1;
  }
  if (!listen.empty()) config->listen = listen;

  edgesplit::Controller controller(*config, edgesplit::RealClock());
  absl::Status loaded_keys = controller.LoadGrantKey();
  if (loaded_keys.ok()) loaded_keys = controller.LoadState();
  if (!loaded_keys.ok()) {
    std::cerr << "edgesplit-controller: " << loaded_keys.message() << "\n";
    return 1;
  }
  auto loaded = controller.ReloadPlans();
  for (const auto& e : loaded.errors()) {
    std::cerr << "edgesplit-controller: plan rejected: " << e << "\n";
  }
  for (const auto& id : loaded.loaded()) {
    std::cerr << "edgesplit-controller: plan loaded for model " << id << "\n";
  }
  auto security = edgesplit::TransportSecurity::Create(config->tls);
  if (!security.ok()) {
    std::cerr << "edgesplit-controller: " << security.status().message()
              << "\n";
    return 1;
  }
  auto credentials = (*security)->ServerCredentials(config->listen);
  if (!credentials.ok()) {
    std::cerr << "edgesplit-controller: " << credentials.status().message()
              << "\n";
    return 1;
  }
  edgesplit::ControllerServiceImpl service(&controller, security->get());
  edgesplit::AdapterDemand demand(config->adapter_placement.half_life);
  if (config->adapter_placement.enabled()) {
    service.set_adapter_demand(&demand);
  }
  auto registry = edgesplit::AdapterRegistry::Open(config->state_dir);
  if (!registry.ok()) {
    std::cerr << "edgesplit-controller: " << registry.status().message()
              << "\n";
    return 1;
  }
  for (const std::string& skipped : (*registry)->skipped()) {
    std::cerr << "edgesplit-controller: adapter left out: " << skipped << "\n";
  }
  auto copies = edgesplit::ModelCopyRegistry::Open(config->state_dir);
  if (!copies.ok()) {
    std::cerr << "edgesplit-controller: " << copies.status().message() << "\n";
    return 1;
  }
  for (const std::string& skipped : (*copies)->skipped()) {
    std::cerr << "edgesplit-controller: model copy left out: " << skipped
              << "\n";
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
    std::cerr << "edgesplit-controller: cannot listen on " << config->listen
              << "\n";
    return 1;
  }
  std::cerr << "edgesplit-controller: listening on port " << port
            << ((*security)->insecure()
                    ? " (INSECURE: plaintext, no identities)"
                    : " (mutual TLS, cluster " + (*security)->cluster() + ")")
            << "\n";

  std::atomic<bool> ready{true};
  std::unique_ptr<edgesplit::OpsHttp> http;
  if (!config->http_listen.empty()) {
    edgesplit::metrics::AddProcessMetrics(controller.metrics_registry());
    edgesplit::AddTlsMetrics(controller.metrics_registry(), security->get());
    auto h = edgesplit::StartControllerHttp(config->http_listen, &controller,
                                            [&ready] { return ready.load(); });
    if (!h.ok()) {
      std::cerr << "edgesplit-controller: " << h.status().message() << "\n";
      return 1;
    }
    http = *std::move(h);
    std::cerr
        << "edgesplit-controller: HTTP (status page, probes, metrics) on port "
        << http->port() << "\n";
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
        std::cerr << "edgesplit-controller: plan rejected: " << e << "\n";
      }
      std::cerr << "edgesplit-controller: plans reloaded (version "
                << controller.plan_version() << ")\n";
    } else if (g_signal != 0) {
      break;
    }
  }
  std::cerr << "edgesplit-controller: shutting down\n";
  edgesplit::SetServing(server.get(), false);
  ready = false;
  // Averaging rounds still waiting would hold their calls: fail them.
  service.ExpireRounds(absl::InfiniteFuture());
  // Stop accepting, let in-flight calls finish for up to 5 s, then cancel.
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  if (http != nullptr) http->Stop();
  return 0;
}
