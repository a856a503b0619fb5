// edgesplit-server --config FILE [--listen HOST:PORT] [--controller
// HOST:PORT] [--name NAME] [--log-format text|json] [--log-level L]
// Flags override the file. Registers with the controller, loads the blocks
// its plans assign, serves sessions. SIGTERM/SIGINT: stop accepting, let
// open sessions finish until drain_deadline_s, then end the rest and exit.

#include <csignal>
#include <iostream>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "edge_server/server.h"
#include "edge_server/server_config.h"
#include "ops/cli.h"
#include "ops/log.h"
#include "runtime/threading.h"

namespace {

volatile std::sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

namespace log = edgesplit::log;

}  // namespace

int main(int argc, char** argv) {
  std::string config_path, listen, controller, name;
  CLI::App app(
      "Serves the transformer blocks the controller's plans give it: "
      "registers, loads its stages, serves sessions (inference and "
      "training), forwards activations to the next hop. SIGTERM/SIGINT: "
      "stop taking sessions, let open ones finish for drain_deadline_s, "
      "then stop. Flags override the config file.",
      "edgesplit-server");
  app.add_option("--config", config_path, "The server's YAML config")
      ->required();
  app.add_option("--listen", listen, "gRPC address (HOST:PORT)");
  app.add_option("--controller", controller, "The controller (HOST:PORT)");
  app.add_option("--name", name,
                 "This server's node name ({name} in the config becomes it)");
  if (int rc = edgesplit::cli::ParseDaemonFlags(
          app,
          "edgesplit-server --config /etc/edgesplit/server.yaml "
          "--name server-a --log-format json",
          argc, argv);
      rc >= 0) {
    return rc;
  }
  auto config = edgesplit::LoadServerConfig(config_path);
  if (!config.ok()) {
    log::Error(config.status().message());
    return edgesplit::cli::kExitFailure;
  }
  if (!listen.empty()) config->listen = listen;
  if (!controller.empty()) config->controller = controller;
  if (!name.empty()) config->name = name;
  config->ExpandName();
  if (absl::Status s = config->Validate(); !s.ok()) {
    log::Error(s.message());
    return edgesplit::cli::kExitFailure;
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
  o.model_dir = config->model_dir;
  o.adapter_disk_bytes = config->adapter_disk_bytes;
  o.adapter_prefetch_interval = config->adapter_prefetch_interval;
  auto security = edgesplit::TransportSecurity::Create(config->tls);
  if (!security.ok()) {
    log::Error(security.status().message());
    return edgesplit::cli::kExitFailure;
  }
  o.security = *security;
  auto server = edgesplit::EdgeServer::Start(o);
  if (!server.ok()) {
    log::Error(server.status().message());
    return edgesplit::cli::kExitFailure;
  }
  log::Info("listening",
            {{"node", config->name},
             {"address", (*server)->address()},
             {"transport",
              o.security->insecure() ? "INSECURE plaintext" : "mutual TLS"}});
  if ((*server)->http_port() != 0) {
    log::Info("HTTP (probes, metrics)",
              {{"port", std::to_string((*server)->http_port())}});
  }
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  while (!g_stop) absl::SleepFor(absl::Milliseconds(100));
  log::Info("draining",
            {{"open_sessions", std::to_string((*server)->open_sessions())}});
  const int cut = (*server)->Shutdown(config->drain_deadline);
  log::Info("stopped", {{"sessions_cut_off", std::to_string(cut)}});
  return edgesplit::cli::kExitOk;
}
