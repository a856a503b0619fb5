#include "ops/ops_http.h"

#include <sys/socket.h>

#include <iostream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "httplib.h"

namespace edgesplit {

absl::StatusOr<std::pair<std::string, int>> ParseListenAddress(
    absl::string_view listen) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == absl::string_view::npos || colon == 0 ||
      !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "http_listen: \"", listen, "\" is not host:port (port 0-65535)"));
  }
  std::string host(listen.substr(0, colon));
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);  // [::1]
  }
  return std::make_pair(host, port);
}

absl::StatusOr<std::unique_ptr<OpsHttp>> OpsHttp::Start(
    OpsHttpOptions options) {
  auto address = ParseListenAddress(options.listen);
  if (!address.ok()) return address.status();
  const auto& [host, port] = *address;
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
  // Probes are one short request each: nobody holds a worker for long,
  // and Stop() does not wait seconds for idle keep-alive connections.
  s->server_->set_keep_alive_max_count(1);
  s->server_->set_keep_alive_timeout(1);
  s->server_->set_read_timeout(1);
  s->server_->set_write_timeout(1);
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
  OpsHttp* self = s.get();
  s->thread_ = std::thread([self] {
    const bool clean = self->server_->listen_after_bind();
    if (!clean && !self->stopping_.load()) {
      // An accept error ended the loop: the probes fail from now on, as
      // they should for a daemon that cannot serve them.
      std::cerr << "edgesplit: HTTP port " << self->options_.listen
                << " stopped serving (accept failed)\n";
    }
    self->exited_.store(true);
  });
  return s;
}

void OpsHttp::Stop() {
  stopping_.store(true);
  // httplib's stop() acts only once its loop runs: ask until it ended.
  while (thread_.joinable() && !exited_.load()) {
    server_->stop();
    absl::SleepFor(absl::Milliseconds(1));
  }
  if (thread_.joinable()) thread_.join();
}

OpsHttp::~OpsHttp() { Stop(); }

}  // namespace edgesplit
