#include "ops/ops_http.h"

#include <sys/socket.h>

#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "httplib.h"

namespace edgesplit {

absl::StatusOr<std::unique_ptr<OpsHttp>> OpsHttp::Start(
    OpsHttpOptions options) {
  const size_t colon = options.listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos ||
      !absl::SimpleAtoi(options.listen.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("http_listen: \"", options.listen, "\" is not host:port"));
  }
  std::string host = options.listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);  // [::1]
  }
  auto s = std::unique_ptr<OpsHttp>(new OpsHttp());
  s->options_ = std::move(options);
  s->server_ = std::make_unique<httplib::Server>();
  // SO_REUSEADDR (a restarted daemon rebinds at once) but not httplib's
  // default SO_REUSEPORT: a second daemon on the same port must fail, not
  // share its probes.
  s->server_->set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  s->server_->Get("/healthz",
                  [](const httplib::Request&, httplib::Response& res) {
                    res.set_content("ok\n", "text/plain");
                  });
  std::function<bool()> ready = s->options_.ready;
  s->server_->Get(
      "/readyz", [ready](const httplib::Request&, httplib::Response& res) {
        const bool yes = !ready || ready();
        res.status = yes ? 200 : 503;
        res.set_content(yes ? "ready\n" : "not ready\n", "text/plain");
      });
  s->port_ = port == 0 ? s->server_->bind_to_any_port(host)
                       : (s->server_->bind_to_port(host, port) ? port : -1);
  if (s->port_ <= 0) {
    return absl::UnavailableError(
        absl::StrCat("http_listen: cannot listen on ", s->options_.listen));
  }
  httplib::Server* server = s->server_.get();
  s->thread_ = std::thread([server] { server->listen_after_bind(); });
  // stop() is a no-op until the loop runs: wait for it, so that a Stop()
  // right after Start() cannot leave the thread serving forever.
  for (int i = 0; i < 5000 && !server->is_running(); ++i) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  if (!server->is_running()) {
    return absl::UnavailableError(absl::StrCat(
        "http_listen: ", s->options_.listen, " bound but not serving"));
  }
  return s;
}

void OpsHttp::Stop() {
  if (server_ != nullptr) server_->stop();
  if (thread_.joinable()) thread_.join();
}

OpsHttp::~OpsHttp() { Stop(); }

}  // namespace edgesplit
