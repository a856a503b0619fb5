#include "ops/http_listener.h"

#include <sys/socket.h>

#include <iostream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "httplib.h"
#include "ops/ops_http.h"

namespace edgesplit {

absl::StatusOr<std::unique_ptr<HttpListener>> HttpListener::Start(
    httplib::Server* server, const std::string& listen,
    const std::string& name) {
  auto address = ParseListenAddress(listen);
  if (!address.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": \"", listen, "\" is not host:port (port 0-65535)"));
  }
  const auto& [host, port] = *address;
  auto l = std::unique_ptr<HttpListener>(new HttpListener());
  l->server_ = server;
  l->listen_ = listen;
  l->name_ = name;
  // Called with the listening socket before cpp-httplib binds it.
  auto listening = std::make_shared<socket_t>(-1);
  server->set_socket_options([listening](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    *listening = sock;
  });
  l->port_ = port == 0 ? server->bind_to_any_port(host)
                       : (server->bind_to_port(host, port) ? port : -1);
  // Linux takes a second listen() on the bound socket as its new backlog.
  if (l->port_ <= 0 || ::listen(*listening, SOMAXCONN) != 0) {
    return absl::UnavailableError(
        absl::StrCat(name, ": cannot listen on ", listen));
  }
  HttpListener* self = l.get();
  l->thread_ = std::thread([self] {
    const bool clean = self->server_->listen_after_bind();
    if (!clean && !self->stopping_.load()) {
      // An accept error ended the loop: requests fail from now on, as they
      // should for a port that cannot serve them.
      std::cerr << "edgesplit: HTTP port " << self->listen_ << " ("
                << self->name_ << ") stopped serving (accept failed)\n";
    }
    self->exited_.store(true);
  });
  return l;
}

void HttpListener::Stop() {
  stopping_.store(true);
  // cpp-httplib's stop() acts only once its loop runs: ask until it ended.
  while (thread_.joinable() && !exited_.load()) {
    server_->stop();
    absl::SleepFor(absl::Milliseconds(1));
  }
  if (thread_.joinable()) thread_.join();
}

HttpListener::~HttpListener() { Stop(); }

}  // namespace edgesplit
