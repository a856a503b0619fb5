// A daemon's HTTP port for operators (cpp-httplib, Debian's
// libcpp-httplib-dev): the probes load balancers and Kubernetes use,
//   GET /healthz  200 "ok" while the process answers (liveness);
//   GET /readyz   200 "ready" when `ready()` says so, else 503 (readiness:
//                 an edge server before its first plan or while it
//                 drains, a controller shutting down);
//   GET /metrics  the daemon's metrics (Prometheus text format 0.0.4,
//                 ops/metrics.h), when it has a registry;
//   the daemon's own pages (the controller's status page: / and
//                 /status.json);
// anything else 404. Plain HTTP without identities: it tells whether the
// daemon is up and how busy it is (counts, latencies, cache sizes; label
// values are model, stage, adapter and job names, never prompts or
// tensors); sessions and data travel on the gRPC port, with mutual TLS.
// Off unless a daemon's `http_listen` names an address: bind it where only
// operators' scrapers reach.
#ifndef EDGESPLIT_OPS_OPS_HTTP_H_
#define EDGESPLIT_OPS_OPS_HTTP_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "ops/http_listener.h"
#include "ops/metrics.h"

namespace httplib {
class Server;
}

namespace edgesplit {

// {host, port} of a daemon's http_listen ("[::1]:80" gives "::1"); an
// error naming http_listen unless it is host:port with a port in 0-65535
// and a host ("0.0.0.0" for every interface).
absl::StatusOr<std::pair<std::string, int>> ParseListenAddress(
    absl::string_view listen);

// A page a daemon adds to its port (the controller's status page).
struct HttpPage {
  std::string path;  // "/", "/status.json"
  std::string content_type;
  std::function<std::string()> render;  // Thread-safe; on a worker thread.
};

struct OpsHttpOptions {
  std::string listen;           // host:port; port 0 picks a free one.
  std::function<bool()> ready;  // Thread-safe; null: always ready.
  // Not owned; must outlive the OpsHttp. Null: no /metrics (404).
  const metrics::Registry* metrics = nullptr;
  std::vector<HttpPage> pages;  // GET only.
};

// Serves from Start() until Stop() or destruction: cpp-httplib's accept
// loop on its own thread (HttpListener), requests on its worker pool (at
// least 8 threads). Thread-safe.
class OpsHttp {
 public:
  // UNAVAILABLE naming the address when it cannot listen there;
  // INVALID_ARGUMENT for an address that is not host:port.
  static absl::StatusOr<std::unique_ptr<OpsHttp>> Start(OpsHttpOptions options);
  ~OpsHttp();  // Stop().
  OpsHttp(const OpsHttp&) = delete;
  OpsHttp& operator=(const OpsHttp&) = delete;

  int port() const { return port_; }
  // Stops serving and joins the thread; idempotent.
  void Stop();

 private:
  OpsHttp() = default;

  OpsHttpOptions options_;
  std::unique_ptr<httplib::Server> server_;
  std::unique_ptr<HttpListener> listener_;  // Declared after server_.
  int port_ = 0;
};

}  // namespace edgesplit

#endif  // EDGESPLIT_OPS_OPS_HTTP_H_
