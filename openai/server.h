// `edgesplit serve`'s HTTP server: the OpenAI API over a Backend, with
// cpp-httplib (Debian's libcpp-httplib-dev).
//
//   GET  /v1/models
//   POST /v1/completions        {"model", "prompt", ...}
//   POST /v1/chat/completions   {"model", "messages", ...}
//   GET  /metrics               Prometheus text (ops/metrics.h): requests
//                               by endpoint and HTTP status, in flight,
//                               time to first text, duration, tokens
//
// "stream": true answers server-sent events. A client that goes away
// cancels its generation (and with it the route's chain) at the next piece
// of text: a stream sees its next write fail; a non-streamed request polls
// its connection for the hang-up (found by its addresses, since cpp-httplib
// 0.11 gives handlers no socket). Errors are OpenAI's error objects with
// 4xx/5xx; the server keeps serving.
//
// Threads: cpp-httplib's accept loop on a thread of its own (HttpListener,
// as every edgesplit HTTP port) and a pool of
// `max_concurrent` request threads, each running one request's generation
// to its end (more requests wait in the pool's queue).
#ifndef EDGESPLIT_OPENAI_SERVER_H_
#define EDGESPLIT_OPENAI_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "openai/backend.h"
#include "ops/http_listener.h"
#include "ops/metrics.h"

namespace httplib {
class Server;
}

namespace edgesplit {
namespace openai {

struct ServerOptions {
  std::string listen = "127.0.0.1:8080";  // host:port; port 0: any free.
  // Connections served at once, each on a thread of the pool while it is
  // open (an idle keep-alive one for up to 2 s); more wait in its queue.
  int max_concurrent = 32;
  // When set, every request must carry "Authorization: Bearer <api_key>"
  // (401 otherwise), as OpenAI's clients send their API key.
  std::string api_key;
  size_t max_body_bytes = 8 << 20;
};

struct ServeMetrics;

class Server {
 public:
  // `backend` is not owned and must outlive the server. UNAVAILABLE when
  // it cannot listen; INVALID_ARGUMENT for a bad address.
  static absl::StatusOr<std::unique_ptr<Server>> Start(ServerOptions options,
                                                       Backend* backend);
  ~Server();  // Stop().
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  int port() const { return listener_->port(); }
  // What GET /metrics serves.
  const metrics::Registry& metrics() const { return *registry_; }
  // Stops accepting, waits for the requests in progress, joins. Idempotent.
  void Stop();

 private:
  Server() = default;
  void Route();

  ServerOptions options_;
  Backend* backend_ = nullptr;
  std::unique_ptr<metrics::Registry> registry_;  // Outlives http_.
  std::unique_ptr<ServeMetrics> metrics_;
  std::unique_ptr<httplib::Server> http_;
  std::unique_ptr<HttpListener> listener_;  // Declared after http_.
};

}  // namespace openai
}  // namespace edgesplit

#endif  // EDGESPLIT_OPENAI_SERVER_H_
