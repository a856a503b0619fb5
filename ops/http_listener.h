// How every edgesplit HTTP port listens (the daemons' probe port and
// `edgesplit serve`): a cpp-httplib server bound to host:port with
// SO_REUSEADDR but not cpp-httplib's SO_REUSEPORT (a second process on the
// same port must fail, not share it), a full listen backlog (cpp-httplib
// 0.11 asks for 5, and a burst of clients overflowed it), and the accept
// loop on a thread of its own until Stop().
#ifndef EDGESPLIT_OPS_HTTP_LISTENER_H_
#define EDGESPLIT_OPS_HTTP_LISTENER_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
}

namespace edgesplit {

class HttpListener {
 public:
  // Binds `server` (not owned; routes set, must outlive this) to `listen`
  // and starts serving. `name` prefixes errors and log lines ("http_listen",
  // "--listen"): INVALID_ARGUMENT for an address that is not host:port,
  // UNAVAILABLE when it cannot listen there.
  static absl::StatusOr<std::unique_ptr<HttpListener>> Start(
      httplib::Server* server, const std::string& listen,
      const std::string& name);
  ~HttpListener();  // Stop().
  HttpListener(const HttpListener&) = delete;
  HttpListener& operator=(const HttpListener&) = delete;

  int port() const { return port_; }
  // Stops accepting, waits for the requests in progress, joins. Idempotent.
  void Stop();

 private:
  HttpListener() = default;

  httplib::Server* server_ = nullptr;
  std::string listen_, name_;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> exited_{false};  // The accept loop returned.
  int port_ = 0;
};

}  // namespace edgesplit

#endif  // EDGESPLIT_OPS_HTTP_LISTENER_H_
