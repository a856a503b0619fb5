#include "ops/ops_http.h"

#include <atomic>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "httplib.h"

namespace edgesplit {
namespace {

TEST(OpsHttpTest, LivenessAlwaysReadinessAsToldElseNotFound) {
  std::atomic<bool> ready{false};
  auto http = OpsHttp::Start({"127.0.0.1:0", [&] { return ready.load(); }});
  ASSERT_TRUE(http.ok()) << http.status();
  httplib::Client client("127.0.0.1", (*http)->port());
  auto live = client.Get("/healthz");
  ASSERT_TRUE(live);
  EXPECT_EQ(live->status, 200);
  EXPECT_EQ(live->body, "ok\n");
  auto not_ready = client.Get("/readyz");
  ASSERT_TRUE(not_ready);
  EXPECT_EQ(not_ready->status, 503);
  ready = true;
  auto now_ready = client.Get("/readyz");
  ASSERT_TRUE(now_ready);
  EXPECT_EQ(now_ready->status, 200);
  auto other = client.Get("/metricz");
  ASSERT_TRUE(other);
  EXPECT_EQ(other->status, 404);
  (*http)->Stop();
  EXPECT_FALSE(client.Get("/healthz"));  // Nobody listens any more.
}

TEST(OpsHttpTest, BadAddressesAreRefusedNamingTheField) {
  for (const char* bad :
       {"nohost", "127.0.0.1:http", "127.0.0.1:70000", ":9161"}) {
    auto http = OpsHttp::Start({bad, nullptr});
    EXPECT_EQ(http.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(http.status().message(), ::testing::HasSubstr("http_listen"));
  }
  auto first = OpsHttp::Start({"127.0.0.1:0", nullptr});
  ASSERT_TRUE(first.ok()) << first.status();
  auto taken =
      OpsHttp::Start({absl::StrCat("127.0.0.1:", (*first)->port()), nullptr});
  EXPECT_EQ(taken.status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace edgesplit
