// edgesplit-server --config FILE [--listen HOST:PORT] [--controller
// HOST:PORT] [--name NAME]
// Flags override the file. Registers with the controller, loads the blocks
// its plans assign, serves sessions. SIGTERM/SIGINT: stop accepting, let
// open sessions finish until drain_deadline_s, then end the rest and exit.

#include <csignal>
#include <iostream>
#include <string>

#include "absl/time/clock.h"
#include "edge_server/server.h"
#include "edge_server/server_config.h"
#include "runtime/threading.h"

namespace {

volatile std::sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

int Usage() {
  std::cerr << "usage: edgesplit-server --config FILE [--listen HOST:PORT] "
               "[--controller HOST:PORT] [--name NAME]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config_path, listen, controller, name;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (i + 1 >= argc) return Usage();
    if (a == "--config") {
      config_path = argv[++i];
    } else if (a == "--listen") {
      listen = argv[++i];
    } else if (a == "--controller") {
      controller = argv[++i];
    } else if (a == "--name") {
      name = argv[++i];
    } else {
      return Usage();
    }
  }
  if (config_path.empty()) return Usage();
  auto config = edgesplit::LoadServerConfig(config_path);
  if (!config.ok()) {
    std::cerr << "edgesplit-server: " << config.status().message() << "\n";
    return 1;
  }
  if (!listen.empty()) config->listen = listen;
  if (!controller.empty()) config->controller = controller;
  if (!name.empty()) config->name = name;
  config->ExpandName();
  if (absl::Status s = config->Validate(); !s.ok()) {
    std::cerr << "edgesplit-server: " << s.message() << "\n";
    return 1;
  }
  edgesplit::SetComputeThreads(config->threads);

  edgesplit::EdgeServerOptions o;
  o.host.node = config->name;
  o.host.kv_budget_bytes = config->kv_budget_bytes;
  o.host.max_batch_tokens = config->max_batch_tokens;
  o.host.adapters.dir = config->adapter_dir;
  o.host.adapters.memory_bytes = config->adapter_cache_bytes;
  o.admission = config->admission;
  o.host.stage.copy_weights = config->copy_weights;
  if (!config->weights.empty()) {
    o.host.stage.weights = edgesplit::kernels::ParseWeightType(config->weights);
  }
  o.listen = config->listen;
  o.session_idle_timeout = config->session_idle_timeout;
  o.controller = config->controller;
  o.http_listen = config->http_listen;
  o.advertise = config->advertise;
  o.advertise_peer = config->advertise_peer;
  o.memory_bytes = config->memory_bytes;
  o.checkpoint_dir = config->checkpoint_dir;
  o.blob_dir = config->blob_dir;
  o.adapter_prefetch_interval = config->adapter_prefetch_interval;
  auto security = edgesplit::TransportSecurity::Create(config->tls);
  if (!security.ok()) {
    std::cerr << "edgesplit-server: " << security.status().message() << "\n";
    return 1;
  }
  o.security = *security;
  auto server = edgesplit::EdgeServer::Start(o);
  if (!server.ok()) {
    std::cerr << "edgesplit-server: " << server.status().message() << "\n";
    return 1;
  }
  std::cerr << "edgesplit-server " << config->name << ": listening on "
            << (*server)->address()
            << (o.security->insecure() ? " (INSECURE: plaintext)"
                                       : " (mutual TLS)")
            << "\n";
  if ((*server)->http_port() != 0) {
    std::cerr << "edgesplit-server " << config->name
              << ": HTTP (probes) on port " << (*server)->http_port() << "\n";
  }
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  while (!g_stop) absl::SleepFor(absl::Milliseconds(100));
  std::cerr << "edgesplit-server " << config->name << ": draining "
            << (*server)->open_sessions() << " sessions\n";
  const int cut = (*server)->Shutdown(config->drain_deadline);
  std::cerr << "edgesplit-server " << config->name << ": stopped"
            << (cut > 0 ? " (" + std::to_string(cut) + " sessions cut off)"
                        : "")
            << "\n";
  return 0;
}
