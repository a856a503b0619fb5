#include "ops/ops_http.h"

#include <cstring>

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
  auto s = std::unique_ptr<OpsHttp>(new OpsHttp());
  s->options_ = std::move(options);
  s->server_ = std::make_unique<httplib::Server>();
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
  if (const metrics::Registry* registry = s->options_.metrics) {
    s->server_->Get("/metrics", [registry](const httplib::Request&,
                                           httplib::Response& res) {
      res.set_content(registry->Render(), metrics::kContentType);
    });
  }
  for (const HttpPage& page : s->options_.pages) {
    // cpp-httplib matches paths as regular expressions: this one literally.
    std::string pattern;
    for (char c : page.path) {
      if (std::strchr(".^$|()[]{}*+?\\", c) != nullptr) pattern += '\\';
      pattern += c;
    }
    s->server_->Get(pattern,
                    [page](const httplib::Request&, httplib::Response& res) {
                      res.set_header("Cache-Control", "no-store");
                      res.set_content(page.render(), page.content_type);
                    });
  }
  auto listener =
      HttpListener::Start(s->server_.get(), s->options_.listen, "http_listen");
  if (!listener.ok()) return listener.status();
  s->listener_ = *std::move(listener);
  s->port_ = s->listener_->port();
  return s;
}

void OpsHttp::Stop() {
  if (listener_ != nullptr) listener_->Stop();
}

OpsHttp::~OpsHttp() { Stop(); }

}  // namespace edgesplit
