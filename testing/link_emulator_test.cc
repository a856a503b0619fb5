// LinkEmulator shapes a real TCP relay: delay and rate per direction, live
// spec changes, failure isolation and a prompt destructor. Timing bounds are
// generous because the test machine has 2 shared cores.
#include "testing/link_emulator.h"

#include <arpa/inet.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace edgesplit {
namespace testing {
namespace {

constexpr int kBulk = 400 << 10;  // 400 KiB: 0.1024 s at 4e6 bytes/s.

bool SendAll(int fd, const std::string& s) {
  for (size_t off = 0; off < s.size();) {
    ssize_t n = send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL);
    if (n <= 0) return false;
    off += static_cast<size_t>(n);
  }
  return true;
}

bool RecvExactly(int fd, size_t n) {
  std::string buf(64 << 10, '\0');
  while (n > 0) {
    ssize_t r = recv(fd, buf.data(), std::min(n, buf.size()), 0);
    if (r <= 0) return false;
    n -= static_cast<size_t>(r);
  }
  return true;
}

// A listening socket on 127.0.0.1:`port` (0 = any); sets *bound_port.
int Listen(int port, int* bound_port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  socklen_t len = sizeof(a);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      listen(fd, 16) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    close(fd);
    return -1;
  }
  *bound_port = ntohs(a.sin_port);
  return fd;
}

// Connects with TCP_NODELAY and a 5 s receive timeout (no test can hang).
int Connect(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  timeval tv{5, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

// A threaded TCP server running `handler(fd)` on every connection.
class TestServer {
 public:
  explicit TestServer(std::function<void(int)> handler, int port = 0)
      : handler_(std::move(handler)), fd_(Listen(port, &port_)) {
    accept_ = std::thread([this] {
      for (int c; (c = accept(fd_, nullptr, nullptr)) >= 0;) {
        std::lock_guard<std::mutex> lock(mu_);
        conns_.push_back(c);
        threads_.emplace_back([this, c] {
          handler_(c);
          shutdown(c, SHUT_WR);  // EOF to the peer; closed in the destructor.
        });
      }
    });
  }
  ~TestServer() {
    shutdown(fd_, SHUT_RDWR);
    accept_.join();
    close(fd_);
    std::lock_guard<std::mutex> lock(mu_);
    for (int c : conns_) shutdown(c, SHUT_RDWR);
    for (auto& t : threads_) t.join();
    for (int c : conns_) close(c);
  }
  std::string address() const { return absl::StrCat("127.0.0.1:", port_); }
  bool ok() const { return fd_ >= 0; }

 private:
  std::function<void(int)> handler_;
  int port_ = 0;
  int fd_;
  std::mutex mu_;
  std::vector<int> conns_;
  std::vector<std::thread> threads_;
  std::thread accept_;
};

void Echo(int fd) {
  char buf[16 << 10];
  for (ssize_t n; (n = recv(fd, buf, sizeof(buf), 0)) > 0;) {
    if (!SendAll(fd, std::string(buf, n))) return;
  }
}

// Reads kBulk bytes, answers one byte.
void UploadThenAck(int fd) {
  if (RecvExactly(fd, kBulk)) SendAll(fd, "k");
}

// Reads one byte, answers kBulk bytes.
void DownloadOnRequest(int fd) {
  if (RecvExactly(fd, 1)) SendAll(fd, std::string(kBulk, 'd'));
}

double MedianRoundTripMs(int fd, int n) {
  std::vector<double> ms;
  for (int i = 0; i < n; ++i) {
    absl::Time t0 = absl::Now();
    if (!SendAll(fd, "x") || !RecvExactly(fd, 1)) return -1;
    ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - t0));
  }
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Sends `up` bytes (from a thread) and waits for `down` bytes; seconds.
double Exchange(int fd, size_t up, size_t down) {
  absl::Time t0 = absl::Now();
  std::thread sender([&] { SendAll(fd, std::string(up, 'u')); });
  bool ok = RecvExactly(fd, down);
  sender.join();
  return ok ? absl::ToDoubleSeconds(absl::Now() - t0) : -1;
}

std::unique_ptr<LinkEmulator> StartOrDie(const std::string& target,
                                         LinkSpec spec) {
  auto link = LinkEmulator::Start(target, spec);
  EXPECT_TRUE(link.ok()) << link.status();
  return link.ok() ? std::move(*link) : nullptr;
}

LinkSpec Delay(absl::Duration d) {
  LinkSpec s;
  s.one_way_delay = d;
  return s;
}

LinkSpec Rates(double up, double down) {
  LinkSpec s;
  s.up_bytes_per_s = up;
  s.down_bytes_per_s = down;
  return s;
}

// A bound socket on 127.0.0.1:`port`, SO_REUSEPORT set if `reuse_port`;
// -1 if bind fails.
int BindTo(int port, bool reuse_port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  if (reuse_port) setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// The held port keeps plain binds off it, lets a SO_REUSEPORT server (as
// gRPC's are) bind and serve on it, and is free again once released.
TEST(ReservedPortTest, OnlyAReusePortServerMayBindIt) {
  auto reserved = ReservedPort::Reserve();
  ASSERT_TRUE(reserved.ok()) << reserved.status();
  const int port = reserved->port();
  ASSERT_GT(port, 0);
  EXPECT_EQ(reserved->address(), absl::StrCat("127.0.0.1:", port));
  EXPECT_EQ(BindTo(port, /*reuse_port=*/false), -1);

  const int server = BindTo(port, /*reuse_port=*/true);
  ASSERT_GE(server, 0);
  ASSERT_EQ(listen(server, 4), 0);
  const int client = Connect(port);
  ASSERT_GE(client, 0);
  const int accepted = accept(server, nullptr, nullptr);
  EXPECT_GE(accepted, 0);  // The connection reached the listening server.
  for (int fd : {client, accepted, server}) close(fd);

  { ReservedPort moved = *std::move(reserved); }  // Released here.
  int bound = 0;  // SO_REUSEADDR: the closed connection may be in TIME_WAIT.
  const int plain = Listen(port, &bound);
  EXPECT_GE(plain, 0);
  if (plain >= 0) close(plain);
}

TEST(LinkEmulatorTest, RoundTripTakesTwiceTheOneWayDelay) {
  TestServer server(Echo);
  auto link = StartOrDie(server.address(), Delay(absl::Milliseconds(20)));
  ASSERT_NE(link, nullptr);
  int fd = Connect(link->port());
  ASSERT_GE(fd, 0);
  double ms = MedianRoundTripMs(fd, 5);
  ::testing::Test::RecordProperty("median_rtt_ms", absl::StrCat(ms));
  EXPECT_GE(ms, 38);
  EXPECT_LE(ms, 70);
  close(fd);
}

TEST(LinkEmulatorTest, RateLimitsEchoedBulkInEitherDirection) {
  TestServer server(Echo);
  for (LinkSpec spec : {Rates(4e6, 0), Rates(0, 4e6)}) {
    auto link = StartOrDie(server.address(), spec);
    ASSERT_NE(link, nullptr);
    int fd = Connect(link->port());
    ASSERT_GE(fd, 0);
    double s = Exchange(fd, kBulk, kBulk);
    ::testing::Test::RecordProperty(
        spec.up_bytes_per_s > 0 ? "up_limited_s" : "down_limited_s",
        absl::StrCat(s));
    EXPECT_GE(s, 0.09) << spec.up_bytes_per_s;
    EXPECT_LE(s, 0.25) << spec.up_bytes_per_s;
    // The counters move just after the write that the client saw.
    absl::Time deadline = absl::Now() + absl::Seconds(2);
    while (link->bytes_down() < kBulk && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    EXPECT_EQ(link->bytes_up(), kBulk);
    EXPECT_EQ(link->bytes_down(), kBulk);
    close(fd);
  }
}

TEST(LinkEmulatorTest, EachRateAppliesToItsOwnDirection) {
  TestServer upload(UploadThenAck);
  TestServer download(DownloadOnRequest);
  struct Case {
    const TestServer* server;
    LinkSpec spec;
    bool limited;
  } cases[] = {{&upload, Rates(4e6, 0), true},
               {&upload, Rates(0, 4e6), false},
               {&download, Rates(0, 4e6), true},
               {&download, Rates(4e6, 0), false}};
  for (const Case& c : cases) {
    auto link = StartOrDie(c.server->address(), c.spec);
    ASSERT_NE(link, nullptr);
    int fd = Connect(link->port());
    ASSERT_GE(fd, 0);
    bool up = c.server == &upload;
    double s = Exchange(fd, up ? kBulk : 1, up ? 1 : kBulk);
    SCOPED_TRACE(absl::StrCat(up ? "upload" : "download",
                              " limited=", c.limited, " took ", s, " s"));
    ASSERT_GE(s, 0);
    ::testing::Test::RecordProperty(
        absl::StrCat(up ? "upload" : "download",
                     c.limited ? "_limited_s" : "_unlimited_s"),
        absl::StrCat(s));
    if (c.limited) {
      EXPECT_GE(s, 0.09);
      EXPECT_LE(s, 0.25);
    } else {
      EXPECT_LE(s, 0.07);
    }
    close(fd);
  }
}

TEST(LinkEmulatorTest, SetSpecChangesDelayForLaterData) {
  TestServer server(Echo);
  auto link = StartOrDie(server.address(), LinkSpec());
  ASSERT_NE(link, nullptr);
  int fd = Connect(link->port());
  ASSERT_GE(fd, 0);
  double fast = MedianRoundTripMs(fd, 3);
  EXPECT_GE(fast, 0);
  EXPECT_LE(fast, 20);
  link->SetSpec(Delay(absl::Milliseconds(30)));
  EXPECT_EQ(link->spec().one_way_delay, absl::Milliseconds(30));
  double slow = MedianRoundTripMs(fd, 3);
  EXPECT_GE(slow, 58);
  EXPECT_LE(slow, 100);
  link->SetSpec(LinkSpec());
  double fast_again = MedianRoundTripMs(fd, 3);
  EXPECT_GE(fast_again, 0);
  EXPECT_LE(fast_again, 20);
  ::testing::Test::RecordProperty(
      "rtt_ms_0_30_0", absl::StrCat(fast, " ", slow, " ", fast_again));
  close(fd);
}

TEST(LinkEmulatorTest, RefusedOrResetConnectionClosesOnlyItself) {
  int port = 0;
  close(Listen(0, &port));  // A port nobody listens on: connect is refused.
  auto link = StartOrDie(absl::StrCat("127.0.0.1:", port), LinkSpec());
  ASSERT_NE(link, nullptr);
  int refused = Connect(link->port());
  ASSERT_GE(refused, 0);
  char c;
  errno = 0;
  EXPECT_LE(recv(refused, &c, 1, 0), 0);  // Closed (EOF or reset)...
  EXPECT_NE(errno, EAGAIN);               // ...not the 5 s timeout.
  close(refused);

  TestServer server(Echo, port);  // The target appears.
  ASSERT_TRUE(server.ok());
  int reset = Connect(link->port());
  ASSERT_GE(reset, 0);
  EXPECT_GE(MedianRoundTripMs(reset, 1), 0);
  SendAll(reset, std::string(kBulk, 'r'));
  linger lg{1, 0};
  setsockopt(reset, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  close(reset);  // RST while data is in flight.

  int good = Connect(link->port());
  ASSERT_GE(good, 0);
  EXPECT_GE(MedianRoundTripMs(good, 3), 0);
  EXPECT_EQ(Exchange(good, kBulk, kBulk) >= 0, true);
  close(good);
}

TEST(LinkEmulatorTest, DestructorIsPromptWithDataInFlight) {
  TestServer server(Echo);
  auto link = StartOrDie(server.address(), Delay(absl::Seconds(3)));
  ASSERT_NE(link, nullptr);
  int fd = Connect(link->port());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(SendAll(fd, std::string(kBulk, 'q')));
  absl::SleepFor(absl::Milliseconds(50));
  absl::Time t0 = absl::Now();
  link.reset();
  double s = absl::ToDoubleSeconds(absl::Now() - t0);
  ::testing::Test::RecordProperty("destructor_s", absl::StrCat(s));
  EXPECT_LE(s, 0.5);
  char c;
  errno = 0;
  EXPECT_LE(recv(fd, &c, 1, 0), 0);
  EXPECT_NE(errno, EAGAIN);
  close(fd);
}

}  // namespace
}  // namespace testing
}  // namespace edgesplit
