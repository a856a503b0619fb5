// A user-space network link emulator for tests and benchmarks.
//
// Why this exists: the kernel on our test machines is built without the
// sch_netem qdisc, so `tc qdisc ... netem rate/delay` is unavailable. Instead
// a LinkEmulator is a TCP relay on 127.0.0.1 that forwards every accepted
// connection to a fixed target while shaping each direction as a serial link
// of rate R (bytes/s) followed by a one-way propagation delay D:
//
//   a chunk of n bytes read from the source at time t starts transmitting at
//   s = max(t, link_free); link_free = s + n / R; it is written to the
//   destination at link_free + D.
//
// Data always stays in order: if SetSpec() shortens the delay, a later chunk
// is written no earlier than the chunk before it. Queued data is bounded
// (kMaxQueuedBytes per direction); beyond that the relay stops reading and TCP
// flow control pushes back on the sender. EOF is forwarded as a half-close
// (shutdown(SHUT_WR)) after the queued data; errors (refused connect, reset)
// close that one relayed connection, abortively, and the emulator goes on
// serving the others.
//
// Threads: one accept thread, and per relayed connection one supervisor plus
// a reader and a writer per direction.
//
// Example:
//   LinkSpec spec;
//   spec.up_bytes_per_s = 1.25e6;  // 10 Mbit/s
//   spec.one_way_delay = absl::Milliseconds(20);
//   auto link = LinkEmulator::Start("127.0.0.1:9000", spec);
//   // Connect the client to (*link)->address() instead of 127.0.0.1:9000.
#ifndef EDGESPLIT_TESTING_LINK_EMULATOR_H_
#define EDGESPLIT_TESTING_LINK_EMULATOR_H_

#include <netinet/in.h>

#include <atomic>
#include <cstdint>
#include <list>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace edgesplit {
namespace testing {

struct LinkSpec {
  double up_bytes_per_s = 0;    // Client -> target direction; 0 = unlimited.
  double down_bytes_per_s = 0;  // Target -> client direction; 0 = unlimited.
  absl::Duration one_way_delay = absl::ZeroDuration();  // Each direction.
};

// Thread-safe: every public method may be called from any thread. The
// emulator owns its listening socket, all relayed sockets and all threads;
// destroying it stops accepting, aborts every relayed connection (queued data
// is dropped) and joins all threads without waiting on the peers.
class LinkEmulator {
 public:
  // Bytes queued per direction (read, not yet written) before the relay
  // stops reading from the source.
  static constexpr int64_t kMaxQueuedBytes = 8 << 20;

  // Listens on 127.0.0.1:0; every accepted connection is relayed to `target`,
  // "host:port" with a numeric IPv4 host such as "127.0.0.1".
  static absl::StatusOr<std::unique_ptr<LinkEmulator>> Start(
      const std::string& target, LinkSpec spec);

  LinkEmulator(const LinkEmulator&) = delete;
  LinkEmulator& operator=(const LinkEmulator&) = delete;
  ~LinkEmulator();

  // "127.0.0.1:PORT", where clients connect.
  std::string address() const;
  int port() const { return port_; }

  // Applies to data read from now on, on all connections (open or future).
  void SetSpec(LinkSpec spec);
  LinkSpec spec() const;

  // Bytes written to the target (up) and to clients (down) so far.
  int64_t bytes_up() const { return bytes_up_.load(); }
  int64_t bytes_down() const { return bytes_down_.load(); }

 private:
  class Connection;
  friend class Connection;

  LinkEmulator(int listen_fd, int port, const sockaddr_in& target,
               LinkSpec spec);
  void AcceptLoop();

  const int listen_fd_;
  const int port_;
  const sockaddr_in target_;
  std::atomic<int64_t> bytes_up_{0};
  std::atomic<int64_t> bytes_down_{0};

  mutable absl::Mutex mu_;
  LinkSpec spec_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::list<std::unique_ptr<Connection>> connections_ ABSL_GUARDED_BY(mu_);

  std::thread accept_thread_;  // Last: starts once the rest is built.
};

// A loopback port held for a server that must be told its port before it
// binds (a relay in front of it is started first). Picking a free port and
// closing it lets another process take it before the server binds, which
// made cluster tests fail under `ctest -j2` ("cannot listen"). The holder
// binds with SO_REUSEPORT and never listens: gRPC servers bind with
// SO_REUSEPORT (their default on Linux), so the server can share the port,
// while other processes, which bind without it or pick ephemeral ports,
// cannot; and no connection reaches a socket that does not listen. Release
// it (destroy it) once the server listens.
//
// Thread-compatible. Owns its socket.
class ReservedPort {
 public:
  static absl::StatusOr<ReservedPort> Reserve();

  ReservedPort(ReservedPort&& other) noexcept;
  ReservedPort& operator=(ReservedPort&& other) noexcept;
  ~ReservedPort();

  int port() const { return port_; }
  // "127.0.0.1:PORT".
  std::string address() const;

 private:
  ReservedPort(int fd, int port) : fd_(fd), port_(port) {}

  int fd_ = -1;
  int port_ = 0;
};

}  // namespace testing
}  // namespace edgesplit

#endif  // EDGESPLIT_TESTING_LINK_EMULATOR_H_
