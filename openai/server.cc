#include "openai/server.h"

#include <dirent.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "httplib.h"
#include "ops/http_listener.h"

namespace edgesplit {
namespace openai {
namespace {

void Reply(httplib::Response& res, const absl::Status& status,
           absl::string_view param = "") {
  res.status = HttpStatusFor(status);
  res.set_content(ErrorJson(status, param), "application/json");
}

void Unauthorized(httplib::Response& res) {
  Reply(res, absl::UnauthenticatedError(
                 "missing or wrong API key (Authorization: Bearer)"));
}

bool Authorized(const ServerOptions& o, const httplib::Request& req) {
  if (o.api_key.empty()) return true;
  const std::string auth = req.get_header_value("Authorization");
  constexpr absl::string_view kBearer = "Bearer ";
  // Same time whatever the key's first differing byte is.
  const std::string want = absl::StrCat(kBearer, o.api_key);
  if (auth.size() != want.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < want.size(); ++i) diff |= auth[i] ^ want[i];
  return diff == 0;
}

// The streamed answer of one request: runs the generation inside the
// content provider (on the request's thread), writing each piece of text
// as an event; a failed write (the client went away) cancels it.
void Stream(std::shared_ptr<Generation> generation,
            std::shared_ptr<CompletionRequest> request,
            httplib::Response& res) {
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  res.set_chunked_content_provider(
      "text/event-stream",
      [generation, request](size_t, httplib::DataSink& sink) {
        const ResponseId id = NewResponseId(request->chat);
        const TextEvents events(*request, id);
        auto write = [&sink](absl::string_view event) {
          return sink.write(event.data(), event.size());
        };
        if (!write(FirstChunkEvent(*request, id))) return false;
        absl::StatusOr<CompletionResult> result;
        // cpp-httplib runs the provider outside its handlers' try/catch:
        // nothing may escape into its thread.
        try {
          result = generation->Run([&](absl::string_view text) {
            return write(events.Event(text));
          });
        } catch (const std::exception& e) {
          result = absl::InternalError(e.what());
        }
        if (!result.ok()) {
          if (result.status().code() == absl::StatusCode::kCancelled) {
            return false;  // The client is gone: nobody to tell.
          }
          write(ErrorEvent(result.status()));
        } else if (!write(FinalChunkEvents(*request, id, *result))) {
          return false;
        }
        write(kDoneEvent);
        sink.done();
        return true;
      });
}

// cpp-httplib 0.11 tells a handler nothing of its client leaving until it
// writes, and a non-streamed answer writes only at the end. The
// connection's socket is found by its addresses among this process's
// descriptors (it stays open until the handler returns) and polled for the
// peer's hang-up. -1 when it cannot be found (the request then runs to its
// end).
int FindConnection(const httplib::Request& req) {
  // Fields cpp-httplib could not fill would match any socket's failure.
  if (req.remote_port <= 0 || req.local_port <= 0 || req.remote_addr.empty() ||
      req.local_addr.empty()) {
    return -1;
  }
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  // Numeric host and port, as cpp-httplib fills the request's fields.
  auto host = [](const sockaddr_storage& a, socklen_t n, int* port) {
    char name[NI_MAXHOST], serv[NI_MAXSERV];
    if (getnameinfo(reinterpret_cast<const sockaddr*>(&a), n, name,
                    sizeof(name), serv, sizeof(serv),
                    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
      return std::string();
    }
    *port = std::atoi(serv);
    return std::string(name);
  };
  int found = -1;
  while (dirent* e = readdir(dir)) {
    const int fd = std::atoi(e->d_name);
    if (fd <= 2 || fd == dirfd(dir)) continue;
    sockaddr_storage local{}, peer{};
    socklen_t ln = sizeof(local), pn = sizeof(peer);
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &ln) != 0 ||
        getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pn) != 0) {
      continue;
    }
    int local_port = -1, peer_port = -1;
    const std::string local_host = host(local, ln, &local_port);
    const std::string peer_host = host(peer, pn, &peer_port);
    if (local_port == req.local_port && peer_port == req.remote_port &&
        local_host == req.local_addr && peer_host == req.remote_addr) {
      found = fd;
      break;
    }
  }
  closedir(dir);
  return found;
}

// Whether the client of connection `fd` hung up. A client that only
// half-closes after its request (shutdown(SHUT_WR): some netcat uses, no
// HTTP library we know) counts as gone, as in Go's net/http.
bool ClientGone(int fd) {
  if (fd < 0) return false;
  pollfd p{fd, POLLRDHUP, 0};
  return poll(&p, 1, 0) == 1 &&
         (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) != 0;
}

// POST /v1/completions and /v1/chat/completions.
void Complete(Backend* backend, const ServerOptions& o, bool chat,
              const httplib::Request& req, httplib::Response& res) {
  // Checked here rather than before routing: cpp-httplib reads the body
  // only for routed requests, and an unread body would corrupt the
  // connection's next request.
  if (!Authorized(o, req)) return Unauthorized(res);
  std::string param;
  auto request = ParseCompletionRequest(req.body, chat, &param);
  if (!request.ok()) return Reply(res, request.status(), param);
  // A non-streamed request watches its connection from the start: a client
  // that left while the request queued costs no route or prefill.
  const int connection = request->stream ? -1 : FindConnection(req);
  if (ClientGone(connection)) {
    return Reply(res, absl::CancelledError("the client went away"));
  }
  absl::StatusOr<std::unique_ptr<Generation>> generation =
      backend->Start(*request);
  if (!generation.ok()) {
    const bool not_found =
        generation.status().code() == absl::StatusCode::kNotFound;
    return Reply(res, generation.status(), not_found ? "model" : "");
  }
  if (request->stream) {
    return Stream(std::shared_ptr<Generation>(*std::move(generation)),
                  std::make_shared<CompletionRequest>(*std::move(request)),
                  res);
  }
  bool gone = false;
  auto result = (*generation)->Run([connection, &gone](absl::string_view) {
    gone = gone || ClientGone(connection);
    return !gone;
  });
  if (gone) return Reply(res, absl::CancelledError("the client went away"));
  if (!result.ok()) return Reply(res, result.status());
  res.set_content(CompletionJson(*request, NewResponseId(chat), *result),
                  "application/json");
}

}  // namespace

absl::StatusOr<std::unique_ptr<Server>> Server::Start(ServerOptions options,
                                                      Backend* backend) {
  if (options.max_concurrent < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_concurrent ", options.max_concurrent, " is not >= 1"));
  }
  auto s = std::unique_ptr<Server>(new Server());
  s->options_ = std::move(options);
  s->backend_ = backend;
  s->http_ = std::make_unique<httplib::Server>();
  const int threads = s->options_.max_concurrent;
  s->http_->new_task_queue = [threads] {
    return new httplib::ThreadPool(static_cast<size_t>(threads));
  };
  s->http_->set_payload_max_length(s->options_.max_body_bytes);
  // Each streamed piece goes out at once, not after the last one's ACK.
  s->http_->set_tcp_nodelay(true);
  // An idle keep-alive connection holds a pool thread: not for long.
  s->http_->set_keep_alive_timeout(2);
  s->http_->set_read_timeout(30);
  s->http_->set_write_timeout(30);
  s->Route();
  auto listener =
      HttpListener::Start(s->http_.get(), s->options_.listen, "--listen");
  if (!listener.ok()) return listener.status();
  s->listener_ = *std::move(listener);
  return s;
}

void Server::Route() {
  Backend* backend = backend_;
  const ServerOptions* o = &options_;
  http_->Get("/v1/models", [backend, o](const httplib::Request& req,
                                        httplib::Response& res) {
    if (!Authorized(*o, req)) return Unauthorized(res);
    res.set_content(ModelsJson(backend->Models()), "application/json");
  });
  http_->Post("/v1/completions", [backend, o](const httplib::Request& req,
                                              httplib::Response& res) {
    Complete(backend, *o, /*chat=*/false, req, res);
  });
  http_->Post("/v1/chat/completions", [backend, o](const httplib::Request& req,
                                                   httplib::Response& res) {
    Complete(backend, *o, /*chat=*/true, req, res);
  });
  // Unknown paths, bodies over the limit, ...: OpenAI's error shape.
  // cpp-httplib calls it for every status >= 400, the API's own errors
  // too: those already have their body.
  http_->set_error_handler(httplib::Server::HandlerWithResponse(
      [](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty())
          return httplib::Server::HandlerResponse::Unhandled;
        const std::string what =
            res.status == 404
                ? absl::StrCat("no route ", req.method, " ", req.path)
                : absl::StrCat("HTTP ", res.status, " for ", req.method, " ",
                               req.path);
        const absl::Status status =
            res.status == 404   ? absl::NotFoundError(what)
            : res.status == 413 ? absl::InvalidArgumentError(
                                      absl::StrCat(what, ": body too large"))
            : res.status < 500 ? absl::InvalidArgumentError(what)
                               : absl::InternalError(what);
        const int http = res.status;
        res.set_content(ErrorJson(status), "application/json");
        res.status = http;
        return httplib::Server::HandlerResponse::Handled;
      }));
  http_->set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr) {
        Reply(res, absl::InternalError("internal error"));
      });
}

void Server::Stop() {
  if (listener_ != nullptr) listener_->Stop();
}

Server::~Server() { Stop(); }

}  // namespace openai
}  // namespace edgesplit
