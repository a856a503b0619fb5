#include "testing/link_emulator.h"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace edgesplit {
namespace testing {
namespace {

constexpr size_t kReadChunk = 16 << 10;

absl::Status Errno(const std::string& what) {
  return absl::ErrnoToStatus(errno, what);
}

void SetNoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

bool SendAll(int fd, const std::string& bytes) {
  size_t sent = 0;
  while (sent < bytes.size()) {
    ssize_t n =
        send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

// One relayed client connection: a supervisor thread connects to the target,
// runs a reader and a writer per direction, then closes both sockets.
class LinkEmulator::Connection {
 public:
  Connection(LinkEmulator* emu, int client_fd)
      : emu_(emu), client_fd_(client_fd), thread_([this] { Run(); }) {}
  ~Connection() { thread_.join(); }

  bool finished() const { return finished_.load(); }

  // Drops queued data, unblocks every thread of this connection and makes
  // the close abortive (RST). Safe to call at any time, more than once.
  void Abort() ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    aborted_ = true;
    for (int fd : {client_fd_, target_fd_}) {
      if (fd >= 0) shutdown(fd, SHUT_RDWR);
    }
    for (Direction* d : {&up_, &down_}) {
      absl::MutexLock dl(&d->mu);
      d->aborted = true;
      d->cv.SignalAll();
    }
  }

 private:
  struct Chunk {
    absl::Time deliver;
    std::string bytes;
  };
  struct Direction {
    explicit Direction(bool is_up) : up(is_up) {}
    const bool up;
    int src = -1;  // Set before the threads start; read-only after.
    int dst = -1;
    absl::Mutex mu;
    absl::CondVar cv;  // Data queued, space freed, EOF or abort.
    std::deque<Chunk> queue ABSL_GUARDED_BY(mu);
    int64_t queued_bytes ABSL_GUARDED_BY(mu) = 0;
    absl::Time link_free ABSL_GUARDED_BY(mu) = absl::InfinitePast();
    bool eof ABSL_GUARDED_BY(mu) = false;
    bool aborted ABSL_GUARDED_BY(mu) = false;
  };

  void Run() {
    const int target = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int client;
    bool aborted;
    {
      absl::MutexLock lock(&mu_);
      target_fd_ = target;
      client = client_fd_;
      aborted = aborted_;
    }
    // Abort() from now on shuts `target` down, which also ends a connect().
    if (target < 0 || aborted ||
        connect(target, reinterpret_cast<const sockaddr*>(&emu_->target_),
                sizeof(emu_->target_)) != 0) {
      Abort();
      Close();
      return;
    }
    SetNoDelay(client);
    SetNoDelay(target);
    up_.src = down_.dst = client;
    up_.dst = down_.src = target;
    std::thread threads[] = {
        std::thread([this] { ReadLoop(up_); }),
        std::thread([this] { WriteLoop(up_); }),
        std::thread([this] { ReadLoop(down_); }),
        std::thread([this] { WriteLoop(down_); }),
    };
    for (std::thread& t : threads) t.join();
    Close();
  }

  void Close() ABSL_LOCKS_EXCLUDED(mu_) {
    int fds[2];
    bool aborted;
    {
      absl::MutexLock lock(&mu_);
      fds[0] = std::exchange(client_fd_, -1);
      fds[1] = std::exchange(target_fd_, -1);
      aborted = aborted_;
    }
    for (int fd : fds) {
      if (fd < 0) continue;
      if (aborted) {
        linger lg{1, 0};
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
      }
      close(fd);
    }
    finished_.store(true);
  }

  void ReadLoop(Direction& d) {
    std::string buf(kReadChunk, '\0');
    for (;;) {
      {
        absl::MutexLock lock(&d.mu);
        while (!d.aborted && d.queued_bytes >= kMaxQueuedBytes) {
          d.cv.Wait(&d.mu);
        }
        if (d.aborted) return;
      }
      const ssize_t n = recv(d.src, buf.data(), buf.size(), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        Abort();
        return;
      }
      if (n == 0) {
        absl::MutexLock lock(&d.mu);
        d.eof = true;
        d.cv.SignalAll();
        return;
      }
      const absl::Time now = absl::Now();
      const LinkSpec spec = emu_->spec();
      const double rate = d.up ? spec.up_bytes_per_s : spec.down_bytes_per_s;
      absl::MutexLock lock(&d.mu);
      const absl::Time start = std::max(now, d.link_free);
      d.link_free =
          start + (rate > 0 ? absl::Seconds(n / rate) : absl::ZeroDuration());
      d.queue.push_back({d.link_free + spec.one_way_delay,
                         std::string(buf.data(), static_cast<size_t>(n))});
      d.queued_bytes += n;
      d.cv.SignalAll();
    }
  }

  void WriteLoop(Direction& d) {
    for (;;) {
      std::string out;  // Every chunk that is due, in order.
      bool eof = false;
      {
        absl::MutexLock lock(&d.mu);
        for (;;) {
          if (d.aborted) return;
          if (d.queue.empty()) {
            if (!out.empty()) break;
            if (d.eof) {
              eof = true;
              break;
            }
            d.cv.Wait(&d.mu);
            continue;
          }
          const absl::Time due = d.queue.front().deliver;
          if (absl::Now() >= due) {
            out += d.queue.front().bytes;
            d.queued_bytes -=
                static_cast<int64_t>(d.queue.front().bytes.size());
            d.queue.pop_front();
            continue;
          }
          if (!out.empty()) break;
          d.cv.WaitWithDeadline(&d.mu, due);
        }
        d.cv.SignalAll();  // Space freed for the reader.
      }
      if (eof) {
        shutdown(d.dst, SHUT_WR);
        return;
      }
      if (!SendAll(d.dst, out)) {
        Abort();
        return;
      }
      (d.up ? emu_->bytes_up_ : emu_->bytes_down_) +=
          static_cast<int64_t>(out.size());
    }
  }

  LinkEmulator* const emu_;
  absl::Mutex mu_;  // Taken before up_.mu / down_.mu, never after.
  int client_fd_ ABSL_GUARDED_BY(mu_);
  int target_fd_ ABSL_GUARDED_BY(mu_) = -1;
  bool aborted_ ABSL_GUARDED_BY(mu_) = false;
  Direction up_{true};
  Direction down_{false};
  std::atomic<bool> finished_{false};
  std::thread thread_;  // Last: Run() starts once the rest is built.
};

absl::StatusOr<std::unique_ptr<LinkEmulator>> LinkEmulator::Start(
    const std::string& target, LinkSpec spec) {
  const size_t colon = target.rfind(':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  int port = 0;
  if (colon == std::string::npos ||
      inet_pton(AF_INET, target.substr(0, colon).c_str(), &addr.sin_addr) !=
          1 ||
      !absl::SimpleAtoi(target.substr(colon + 1), &port) || port <= 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LinkEmulator target must be IPv4 host:port, got '", target, "'"));
  }
  addr.sin_port = htons(static_cast<uint16_t>(port));

  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Errno("LinkEmulator socket");
  sockaddr_in local{};
  local.sin_family = AF_INET;
  local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(local);
  if (bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0 ||
      listen(fd, 128) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) {
    absl::Status status = Errno("LinkEmulator bind/listen");
    close(fd);
    return status;
  }
  SetNoDelay(fd);
  return std::unique_ptr<LinkEmulator>(
      new LinkEmulator(fd, ntohs(local.sin_port), addr, spec));
}

LinkEmulator::LinkEmulator(int listen_fd, int port, const sockaddr_in& target,
                           LinkSpec spec)
    : listen_fd_(listen_fd),
      port_(port),
      target_(target),
      spec_(spec),
      accept_thread_([this] { AcceptLoop(); }) {}

LinkEmulator::~LinkEmulator() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  shutdown(listen_fd_, SHUT_RDWR);  // Makes a blocked accept() return.
  accept_thread_.join();
  close(listen_fd_);
  std::list<std::unique_ptr<Connection>> connections;
  {
    absl::MutexLock lock(&mu_);
    connections.swap(connections_);
  }
  for (auto& c : connections) c->Abort();
  connections.clear();  // Joins.
}

absl::StatusOr<ReservedPort> ReservedPort::Reserve() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return Errno("ReservedPort socket");
  int one = 1;
  sockaddr_in local{};
  local.sin_family = AF_INET;
  local.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(local);
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0 ||
      bind(fd, reinterpret_cast<sockaddr*>(&local), sizeof(local)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&local), &len) != 0) {
    absl::Status status = Errno("ReservedPort bind");
    close(fd);
    return status;
  }
  return ReservedPort(fd, ntohs(local.sin_port));
}

ReservedPort::ReservedPort(ReservedPort&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)), port_(other.port_) {}

ReservedPort& ReservedPort::operator=(ReservedPort&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = std::exchange(other.fd_, -1);
    port_ = other.port_;
  }
  return *this;
}

ReservedPort::~ReservedPort() {
  if (fd_ >= 0) close(fd_);
}

std::string ReservedPort::address() const {
  return absl::StrCat("127.0.0.1:", port_);
}

std::string LinkEmulator::address() const {
  return absl::StrCat("127.0.0.1:", port_);
}

void LinkEmulator::SetSpec(LinkSpec spec) {
  absl::MutexLock lock(&mu_);
  spec_ = spec;
}

LinkSpec LinkEmulator::spec() const {
  absl::MutexLock lock(&mu_);
  return spec_;
}

void LinkEmulator::AcceptLoop() {
  for (;;) {
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    const int accept_errno = errno;
    std::list<std::unique_ptr<Connection>> done;  // Joined after unlocking.
    absl::MutexLock lock(&mu_);
    if (stopping_) {
      if (fd >= 0) close(fd);
      return;
    }
    for (auto it = connections_.begin(); it != connections_.end();) {
      auto next = std::next(it);
      if ((*it)->finished()) done.splice(done.end(), connections_, it);
      it = next;
    }
    if (fd < 0) {
      // Transient (EINTR, ECONNABORTED, EMFILE): back off briefly.
      if (accept_errno != EINTR && accept_errno != ECONNABORTED) {
        mu_.AwaitWithTimeout(absl::Condition(&stopping_),
                             absl::Milliseconds(10));
      }
      continue;
    }
    connections_.push_back(std::make_unique<Connection>(this, fd));
  }
}

}  // namespace testing
}  // namespace edgesplit
